/**
 * A periodic task that one replica at a time runs: replicas compete for one
 * etcd key attached to their own etcd lease (the election name is the key),
 * and only the replica that created it ticks, every periodMs. The others
 * watch the key and compete again when it is deleted (the leader resigned,
 * or its lease expired). A lost lease (etcd gone past the TTL) stops the
 * ticks and competes again a second later. Winning after stop() began
 * resigns at once, so no tick starts that nobody will clear. The expirer
 * and the host reaper are each one of these; what they do on a tick is
 * fenced in etcd either way, so two leaders for a moment could not do harm.
 *
 * Not etcd3's Campaign: a candidate that is not the leader waits on a
 * watcher that resign() never cancels, and a closed client then retries
 * that watch forever, on timers that keep the process alive.
 */
import type { Etcd3, Lease, Namespace, Watcher } from 'etcd3';
import { castError } from '../common/errors';
import type { Logger } from '../common/log';

export interface LeadershipOptions {
  /** The etcd key the replicas compete for (common/keys.ts). */
  election: string;
  replicaId: string;
  periodMs: number;
  /** For logs: 'expirer', 'host reaper'. */
  role: string;
  tick: () => void;
  /** Runs once on each election, before the first tick. */
  onElected?: () => void;
  /** Tick at once on election rather than a period later. */
  tickOnElection?: boolean;
  /** The candidates' etcd lease TTL: how long a leader that vanished keeps the key. */
  ttlSeconds?: number;
}

const RETRY_MS = 1000;
const CANCEL_WITHIN_MS = 2000;

/**
 * One campaign: its lease, and the watch it waits on. Each has its own, so a
 * campaign that a lost lease replaced, still finishing a call, can neither
 * take nor leave behind its successor's watch.
 */
interface Campaign {
  lease: Lease;
  watcher: Watcher | null;
  /** Ends the wait on the watch (stop, or the lease lost). */
  wake: (() => void) | null;
}

export class Leadership {
  private current: Campaign | null = null;
  /** Campaigns still running (a replaced one ends at its next step). */
  private readonly running = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private leader = false;
  private stopped = false;
  /**
   * Its own namespace (same keys, empty prefix) for its own watch stream:
   * etcd3 multiplexes every watcher of a namespace on one stream, and the
   * controller's view re-creates its watcher there after a compaction.
   */
  private readonly etcd: Namespace;

  constructor(etcd: Etcd3, private readonly log: Logger, private readonly o: LeadershipOptions) {
    this.etcd = etcd.namespace('');
  }

  get isLeader(): boolean { return this.leader; }

  start(): void {
    if (this.stopped || this.current) return;
    const c: Campaign = { lease: this.etcd.lease(this.o.ttlSeconds ?? 10), watcher: null, wake: null };
    this.current = c;
    c.lease.on('lost', (e: Error) => this.fail(c, e));
    const run = this.compete(c).catch((e) => this.fail(c, castError(e)));
    this.running.add(run);
    void run.finally(() => this.running.delete(run));
  }

  /** No tick starts after this; `drain` (the tick under way) settles before the replica resigns. */
  async stop(drain: () => Promise<unknown> | null = () => null): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await drain();
    const c = this.current;
    this.current = null; // first: what the wake ends sees a stopped, not a failed, campaign
    c?.wake?.();
    if (c) await cancelWatch(c);
    // A campaign may be between two calls: let it see the stop before the caller closes the client.
    await within(Promise.allSettled([...this.running]), CANCEL_WITHIN_MS).catch(() => undefined);
    if (c) {
      await cancelWatch(c);
      // Revoking deletes the key, so another replica takes over now rather than after the TTL.
      await within(c.lease.revoke(), CANCEL_WITHIN_MS).catch(() => undefined);
    }
    this.leader = false;
  }

  private live(c: Campaign): boolean {
    return !this.stopped && this.current === c;
  }

  private async compete(c: Campaign): Promise<void> {
    const id = await c.lease.grant();
    const key = this.o.election;
    while (this.live(c)) {
      const r = await this.etcd.if(key, 'Create', '==', 0)
        .then(this.etcd.put(key).value(this.o.replicaId).lease(id))
        .else(this.etcd.get(key))
        .commit();
      const from = BigInt(r.header.revision) + 1n;
      if (!this.live(c)) return; // stop() or fail() revokes the lease, and the key with it
      if (r.succeeded) {
        this.elected();
        // A leader whose key is gone (deleted by hand, or its lease expired unseen) is no longer one.
        await this.deleted(c, key, from);
        if (this.live(c)) this.fail(c, new Error('leader key deleted'));
        return;
      }
      // Someone leads: wait for its key to go, from the revision just read.
      await this.deleted(c, key, from);
    }
  }

  private elected(): void {
    this.leader = true;
    this.o.onElected?.();
    this.log.info(`elected ${this.o.role}`, { replica: this.o.replicaId });
    this.timer = setInterval(this.o.tick, this.o.periodMs);
    this.timer.unref();
    if (this.o.tickOnElection) this.o.tick();
  }

  /** Until key is deleted (from revision `from` on), or the campaign ends. */
  private async deleted(c: Campaign, key: string, from: bigint): Promise<void> {
    if (!this.live(c)) return;
    // Held before it connects: a stop while etcd is slow can still detach it.
    const w = this.etcd.watch().key(key).startRevision(String(from)).watcher();
    c.watcher = w;
    try {
      await new Promise<void>((resolve, reject) => {
        c.wake = resolve;
        w.on('delete', () => resolve());
        w.on('error', reject);
        if (!this.live(c)) resolve();
      });
    } finally {
      c.wake = null;
      await cancelWatch(c);
    }
  }

  /** The lease is lost or competing failed: stop ticking, and compete again with a new lease. */
  private fail(c: Campaign, e: Error): void {
    if (this.current !== c) return;
    this.current = null;
    this.leader = false;
    this.clearTimer();
    c.wake?.();
    void cancelWatch(c);
    void c.lease.revoke().catch(() => undefined);
    if (this.stopped) return;
    this.log.warn(`${this.o.role} campaign failed, campaigning again`, { error: e.message });
    setTimeout(() => this.start(), RETRY_MS).unref();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

async function cancelWatch(c: Campaign): Promise<void> {
  const w = c.watcher;
  c.watcher = null;
  if (w) await within(w.cancel(), CANCEL_WITHIN_MS).catch(() => undefined);
}

/** p, or a rejection after ms: a call to an etcd that went away must not hold a shutdown. */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
