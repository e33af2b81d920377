/**
 * Held leases whose hold has lapsed become free addresses, and history is
 * trimmed to its bounds. Exactly one replica does this at a time: replicas
 * campaign in an etcd election and only the leader sweeps. Even so, every
 * delete compares the lease's mod revision with the one judged expired, so a
 * lease rebound in between is never freed, whoever sweeps.
 *
 * Nothing here scans etcd on a timer. Expiry is driven by the watch-fed view:
 * every held lease the view sees goes into a time-ordered queue
 * (expiry-queue.ts) and a pass pops only what is due. History is trimmed
 * per address (and per identity) when that address gets a new event: one
 * keys-only read of its oldest keys, with the total count etcd returns
 * beside them. Only the age limit needs a whole pass, and that pass is paged,
 * keys only, and runs once per `historyScanMs` (default 1 h). At rest a pass
 * costs O(1) and reads nothing.
 */
import type { Etcd3 } from 'etcd3';
import { pagedRange, prefixEnd } from '../common/etcd-paged';
import { castError } from '../common/errors';
import { keys } from '../common/keys';
import type { Logger } from '../common/log';
import type { LeaseEvent, LeaseView } from '../common/records';
import { ExpiryQueue, type Due } from './expiry-queue';
import { Leadership } from './leadership';
import { event, isExpired } from './lease-rules';
import { commitIf, del, putEvent } from './txn';
import type { ClusterView } from './view';

export interface ExpirerOptions {
  replicaId: string;
  sweepMs: number;
  historyMaxAgeMs: number;
  historyMaxPerAddress: number;
  now: () => number;
  /** The watch-fed view whose lease changes drive expiry. */
  view: ClusterView;
  /** How often the paged age pass over all history keys runs (default 1 h). */
  historyScanMs?: number;
  /** Told the result of every sweep (controller/metrics.ts). */
  onPass?: (r: { ok: boolean; freed: number }) => void;
}

/** Key of an event (by address or identity): .../<at>-<seq>; `at` is ISO 8601. */
function eventTime(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1, key.lastIndexOf('-'));
}

/**
 * Trims one address's (or identity's) history: deletes its oldest events
 * beyond `maxCount` and those older than `cutoff`. Reads at most `batch` keys,
 * oldest first, keys only; returns how many it deleted and whether more
 * remain to delete (then call again).
 */
export async function trimPrefix(etcd: Etcd3, prefix: string, cutoff: string, maxCount: number, batch = 64): Promise<{ deleted: number; more: boolean }> {
  const res = await etcd.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix), limit: batch, keys_only: true });
  const total = Number(res.count);
  const doomed: string[] = [];
  res.kvs.forEach((kv, i) => {
    const k = kv.key.toString();
    if (i < total - maxCount || eventTime(k) < cutoff) doomed.push(k);
  });
  if (doomed.length > 0) await commitIf(etcd, [], doomed.map((k) => del(etcd, k)));
  return { deleted: doomed.length, more: doomed.length === res.kvs.length && res.more === true };
}

/** The age pass: every history key older than `cutoff`, paged and keys only. */
export async function trimByAge(etcd: Etcd3, cutoff: string): Promise<number> {
  let deleted = 0;
  for (const prefix of [keys.eventPrefix, keys.identityEventPrefix]) {
    await pagedRange(etcd, prefix, async (kvs) => {
      const doomed = kvs.map((kv) => kv.key.toString()).filter((k) => eventTime(k) < cutoff);
      for (let i = 0; i < doomed.length; i += 100) {
        await commitIf(etcd, [], doomed.slice(i, i + 100).map((k) => del(etcd, k)));
      }
      deleted += doomed.length;
    }, { keysOnly: true });
  }
  return deleted;
}

/** Frees one lapsed lease if it is still exactly the one judged expired. */
export async function expireLease(etcd: Etcd3, lease: LeaseView, nowMs: number): Promise<boolean> {
  const ev = event('expired', lease, null, new Date(nowMs).toISOString(), 'expirer');
  const key = keys.lease(lease.pool, lease.ip);
  const rev = await commitIf(etcd, [[key, 'Mod', lease.revision]],
    [del(etcd, key), del(etcd, keys.identity(lease.pool, lease.identity)), putEvent(etcd, ev)]);
  return rev !== null;
}

const MAX_TRIMS_PER_PASS = 256;
const EXPIRE_CONCURRENCY = 8;

export class Expirer {
  private readonly leadership: Leadership;
  private sweeping: Promise<void> | null = null;
  private lastScanMs: number | null = null;
  private readonly queue = new ExpiryQueue();
  /** History prefixes with new events since they were last trimmed. */
  private readonly dirty = new Set<string>();
  private readonly unsubscribe: () => void;
  /** Completed passes (tests wait on it). */
  passes = 0;

  constructor(private readonly etcd: Etcd3, private readonly log: Logger, private readonly opts: ExpirerOptions) {
    const view = opts.view;
    // Fed from construction, not election: a newly elected replica's queue is already complete.
    this.unsubscribe = view.subscribe({
      lease: (pool, ip, lease) => { if (lease) this.index(lease); },
      event: (k) => { this.dirty.add('ip' in k ? keys.addressEventPrefix(k.ip) : keys.identityEvents(k.identity)); },
      reset: () => this.rebuild(),
    });
    this.rebuild();
    this.leadership = new Leadership(etcd, log, {
      election: keys.electionExpirer, replicaId: opts.replicaId, periodMs: opts.sweepMs, role: 'expirer', tick: () => { void this.sweepOnce(); },
    });
  }

  get isLeader(): boolean { return this.leadership.isLeader; }

  /** Held leases waiting in the queue, stale entries included (for tests and logs). */
  get queued(): number { return this.queue.size; }

  private index(l: LeaseView): void {
    if (l.state !== 'held' || l.pinned || l.heldUntil === undefined) return;
    const at = Date.parse(l.heldUntil);
    if (!Number.isNaN(at)) this.queue.push({ at, pool: l.pool, ip: l.ip, mod: l.revision });
  }

  private rebuild(): void {
    this.queue.clear();
    for (const leases of this.opts.view.leases.values()) for (const l of leases.values()) this.index(l);
  }

  private current(d: Due): LeaseView | undefined {
    const l = this.opts.view.leases.get(d.pool)?.get(d.ip);
    return l && l.revision === d.mod ? l : undefined;
  }

  start(): void {
    this.leadership.start();
  }

  sweepOnce(): Promise<void> {
    if (!this.sweeping) {
      this.sweeping = this.doSweep().finally(() => { this.sweeping = null; this.passes++; });
    }
    return this.sweeping;
  }

  private async doSweep(): Promise<void> {
    try {
      const now = this.opts.now();
      const freed = await this.expireDue(now);
      const trimmed = await this.trimDirty(now);
      let aged = 0;
      const scanMs = this.opts.historyScanMs ?? 3600_000;
      this.lastScanMs ??= now;
      if (now - this.lastScanMs >= scanMs) {
        this.lastScanMs = now;
        aged = await trimByAge(this.etcd, new Date(now - this.opts.historyMaxAgeMs).toISOString());
      }
      if (this.queue.size > 1024 && this.queue.size > 4 * this.liveHeld()) this.queue.compact((d) => this.current(d) !== undefined);
      if (freed || trimmed || aged) this.log.info('expirer pass', { freed, trimmed, aged });
      this.opts.onPass?.({ ok: true, freed });
    } catch (e) {
      this.log.warn('expirer pass failed', { error: castError(e).message });
      this.opts.onPass?.({ ok: false, freed: 0 });
    }
  }

  private liveHeld(): number {
    let n = 0;
    for (const pool of this.opts.view.leases.keys()) n += this.opts.view.countsOf(pool).held;
    return n;
  }

  private async expireDue(now: number): Promise<number> {
    const due = this.queue.popDue(now, (d) => { const l = this.current(d); return l !== undefined && isExpired(l, now); });
    let freed = 0;
    let failed: unknown = null;
    for (let i = 0; i < due.length; i += EXPIRE_CONCURRENCY) {
      await Promise.all(due.slice(i, i + EXPIRE_CONCURRENCY).map(async (d) => {
        const l = this.current(d);
        if (!l) return;
        try {
          if (await expireLease(this.etcd, l, now)) freed++;
        } catch (e) {
          // etcd unreachable: keep it queued for the next pass.
          this.queue.push(d);
          failed = e;
        }
      }));
    }
    if (failed) throw failed;
    return freed;
  }

  private async trimDirty(now: number): Promise<number> {
    if (this.dirty.size === 0) return 0;
    const cutoff = new Date(now - this.opts.historyMaxAgeMs).toISOString();
    let deleted = 0;
    // Taken out of the set before the reads: an event arriving meanwhile marks its prefix again.
    const batch = [...this.dirty].slice(0, MAX_TRIMS_PER_PASS);
    for (const prefix of batch) this.dirty.delete(prefix);
    for (let i = 0; i < batch.length; i++) {
      try {
        const r = await trimPrefix(this.etcd, batch[i], cutoff, this.opts.historyMaxPerAddress);
        deleted += r.deleted;
        if (r.more) this.dirty.add(batch[i]);
      } catch (e) {
        for (const prefix of batch.slice(i)) this.dirty.add(prefix);
        throw e;
      }
    }
    return deleted;
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    await this.leadership.stop(() => this.sweeping);
  }

}

export type { LeaseEvent };
