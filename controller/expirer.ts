/**
 * Held leases whose hold has lapsed become free addresses, and history is
 * trimmed to its bounds. Exactly one replica does this at a time: replicas
 * campaign in an etcd election and only the leader sweeps. Even so, every
 * delete compares the lease's mod revision with the one judged expired, so a
 * lease rebound in between is never freed, whoever sweeps.
 */
import type { Campaign, Etcd3 } from 'etcd3';
import { castError } from '../common/errors';
import { keys } from '../common/keys';
import type { Logger } from '../common/log';
import type { Lease, LeaseEvent } from '../common/records';
import { event, isExpired } from './lease-rules';
import { commitIf, del, putEvent } from './txn';

export interface ExpirerOptions {
  replicaId: string;
  sweepMs: number;
  historyMaxAgeMs: number;
  historyMaxPerAddress: number;
  now: () => number;
  /** Told the result of every sweep (controller/metrics.ts). */
  onPass?: (r: { ok: boolean; freed: number }) => void;
}

export async function sweepExpired(etcd: Etcd3, nowMs: number): Promise<number> {
  const res = await etcd.getAll().prefix(keys.leasePrefix).exec();
  let freed = 0;
  for (const kv of res.kvs) {
    const lease = JSON.parse(kv.value.toString()) as Lease;
    if (!isExpired(lease, nowMs)) continue;
    const ev = event('expired', lease, null, new Date(nowMs).toISOString(), 'expirer');
    const idKey = keys.identity(lease.pool, lease.identity);
    const rev = await commitIf(etcd, [[kv.key.toString(), 'Mod', String(kv.mod_revision)]], [del(etcd, kv.key.toString()), del(etcd, idKey), putEvent(etcd, ev)]);
    if (rev !== null) freed++;
  }
  return freed;
}

export async function trimHistory(etcd: Etcd3, nowMs: number, maxAgeMs: number, maxPerAddress: number): Promise<number> {
  const res = await etcd.getAll().prefix(keys.eventPrefix).keys();
  const byIp = new Map<string, string[]>();
  for (const k of res) {
    const ip = k.slice(keys.eventPrefix.length).split('/')[0];
    const list = byIp.get(ip) ?? [];
    list.push(k);
    byIp.set(ip, list);
  }
  const doomed: string[] = [];
  const cutoff = new Date(nowMs - maxAgeMs).toISOString();
  for (const list of byIp.values()) {
    list.sort();
    list.forEach((k, i) => {
      const at = k.slice(k.lastIndexOf('/') + 1, k.lastIndexOf('-'));
      if (at < cutoff || i < list.length - maxPerAddress) doomed.push(k);
    });
  }
  for (let i = 0; i < doomed.length; i += 100) {
    await commitIf(etcd, [], doomed.slice(i, i + 100).map((k) => del(etcd, k)));
  }
  return doomed.length;
}

export class Expirer {
  private campaign: Campaign | null = null;
  private timer: NodeJS.Timeout | null = null;
  private leader = false;
  private stopped = false;
  private sweeping: Promise<void> | null = null;
  private lastTrimMs = 0;

  constructor(private readonly etcd: Etcd3, private readonly log: Logger, private readonly opts: ExpirerOptions) {}

  get isLeader(): boolean { return this.leader; }

  start(): void {
    if (this.stopped) return;
    const c = this.etcd.election(keys.electionExpirer, 10).campaign(this.opts.replicaId);
    this.campaign = c;
    c.on('elected', () => {
      // Winning after stop() began would start a sweep nobody will clear.
      if (this.stopped || this.campaign !== c) { void c.resign().catch(() => undefined); return; }
      this.leader = true;
      this.log.info('elected expirer', { replica: this.opts.replicaId });
      this.timer = setInterval(() => { void this.sweepOnce(); }, this.opts.sweepMs);
      this.timer.unref();
    });
    c.on('error', (e: Error) => {
      this.leader = false;
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      if (this.stopped) return;
      this.log.warn('expirer campaign failed, campaigning again', { error: e.message });
      setTimeout(() => this.start(), 1000).unref();
    });
  }

  sweepOnce(): Promise<void> {
    if (!this.sweeping) {
      this.sweeping = this.doSweep().finally(() => { this.sweeping = null; });
    }
    return this.sweeping;
  }

  private async doSweep(): Promise<void> {
    try {
      const now = this.opts.now();
      const freed = await sweepExpired(this.etcd, now);
      let trimmed = 0;
      // History is read whole to trim it, so do that at most once a minute.
      if (now - this.lastTrimMs >= 60_000) {
        trimmed = await trimHistory(this.etcd, now, this.opts.historyMaxAgeMs, this.opts.historyMaxPerAddress);
        this.lastTrimMs = now;
      }
      if (freed || trimmed) this.log.info('expirer pass', { freed, trimmed });
      this.opts.onPass?.({ ok: true, freed });
    } catch (e) {
      this.log.warn('expirer pass failed', { error: castError(e).message });
      this.opts.onPass?.({ ok: false, freed: 0 });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.sweeping;
    const c = this.campaign;
    this.campaign = null;
    if (c) await c.resign().catch(() => undefined);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.leader = false;
  }
}

export type { LeaseEvent };
