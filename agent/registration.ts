/**
 * Registration: two keys, with different lifetimes on purpose.
 *
 *   /berth/v1/hosts/<host>   the host record (underlay address, VTEP MAC, VNI,
 *                            pool). Persistent: no etcd lease. Written when it
 *                            is missing or differs from ours, never otherwise.
 *   /berth/v1/alive/<host>   liveness, attached to an etcd lease (TTL, default
 *                            10 s) that this agent keeps alive.
 *
 * Peers route by the record, so an agent that is frozen, restarting or
 * OOM-killed changes no route anywhere: its pods keep working. Liveness
 * only feeds the controller's host reaper, which declares a host dead after
 * its alive key has been gone for minutes (`--host-dead-after`), or when an
 * operator runs `berthctl hosts forget`; only then is the record deleted and
 * its bound leases turned held (docs/agent.md "Registration and liveness").
 *
 * Restarts: stop() stops the keepalive but does not revoke the lease; a
 * restarted agent grants a fresh lease and re-puts the alive key. The
 * alive key goes first, so the reaper (whose writes all require the alive key
 * to be absent) cannot annotate or kill the record after we rewrote it. If
 * the lease is lost while running (etcd unreachable past the TTL, or
 * revoked), the agent registers again with backoff. If our alive key is
 * deleted behind our back, a watch puts it back at once. A record that was
 * deleted (host forgotten) or annotated by the reaper is rewritten by
 * ensureRecord(), which the daemon calls whenever the watch shows our record change.
 */
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { castError } from '../common/errors';
import { keys } from '../common/keys';
import type { Logger } from '../common/log';
import type { Host, HostAlive } from '../common/records';

export const DEFAULT_HOST_TTL_SECONDS = 10;

export interface RegistrationOptions {
  ttlSeconds?: number;
  now?: () => Date;
  /** Retry delays after a failed registration: doubles from min to max. */
  backoffMs?: { min: number; max: number };
  /** notePass rewrites the alive key at most this often (default 30 s): `berthctl status` shows pass age, etcd sees few writes. */
  passPublishMs?: number;
}

/** Pure: the value written under the host key. */
export function hostRecord(r: Omit<Host, 'registeredAt'>, now: Date): Host {
  return { name: r.name, underlayIp: r.underlayIp, vtepMac: r.vtepMac.toLowerCase(), vni: r.vni, pool: r.pool, registeredAt: now.toISOString() };
}

/**
 * Pure: whether the stored record must be rewritten: it is missing, says
 * something else about us, or carries the reaper's absent/dead annotations.
 * registeredAt alone never causes a write.
 */
export function recordNeedsWrite(stored: Host | null, self: Omit<Host, 'registeredAt'>): boolean {
  if (!stored) return true;
  const want = hostRecord(self, new Date(0));
  return stored.name !== want.name || stored.underlayIp !== want.underlayIp || stored.vtepMac !== want.vtepMac
    || stored.vni !== want.vni || stored.pool !== want.pool || stored.absent !== undefined || stored.dead !== undefined;
}

export class Registration {
  /** How many times the alive key was (re)written on a new lease; tests watch it grow after a loss. */
  registrations = 0;
  /** How many times the host record was written. */
  recordWrites = 0;
  private lease: Lease | null = null;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  private watcher: Watcher | null = null;
  private watchRetry: NodeJS.Timeout | null = null;
  private ensuring: Promise<void> | null = null;
  private ensureAgain = false;
  private readonly ttl: number;
  private readonly now: () => Date;
  private readonly backoff: { min: number; max: number };
  private delay: number;
  private readonly passPublishMs: number;
  /** The alive value's `since` (this lease's registration) and the last pass it reports. */
  private since: string | undefined;
  private lastPassAt: string | undefined;
  private publishedMs = 0;
  private publishing = false;
  private passWhilePublishing: Date | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly self: Omit<Host, 'registeredAt'>,
    private readonly log: Logger,
    o: RegistrationOptions = {},
  ) {
    this.ttl = o.ttlSeconds ?? DEFAULT_HOST_TTL_SECONDS;
    this.now = o.now ?? (() => new Date());
    this.backoff = o.backoffMs ?? { min: 200, max: 5000 };
    this.delay = this.backoff.min;
    this.passPublishMs = o.passPublishMs ?? 30_000;
  }

  /** The record this agent registers (registeredAt of now). */
  record(): Host {
    return hostRecord(this.self, this.now());
  }

  get registered(): boolean {
    return this.lease !== null;
  }

  /**
   * Registers once. If etcd refuses, keeps retrying in the background and
   * resolves anyway: the local data plane does not wait for the cluster.
   */
  async start(): Promise<void> {
    try {
      await this.register();
    } catch (e) {
      this.log.warn('registration failed', { error: castError(e).message, retryInMs: this.delay });
      this.scheduleRetry();
    }
    this.watchAlive();
  }

  private aliveValue(): string {
    const v: HostAlive = { host: this.self.name, since: this.since ?? this.now().toISOString(), ...(this.lastPassAt ? { lastPassAt: this.lastPassAt } : {}) };
    return JSON.stringify(v);
  }

  /**
   * A reconcile pass finished: publish its time in the alive key, unless the
   * key already says a time less than passPublishMs old. One put on the
   * agent's own lease, at most every passPublishMs; failures wait for the next pass.
   */
  notePass(at: Date): void {
    this.lastPassAt = at.toISOString();
    const lease = this.lease;
    if (!lease || this.stopped || (this.publishedMs !== 0 && at.getTime() - this.publishedMs < this.passPublishMs)) return;
    // One put at a time; a pass noted meanwhile is looked at again when it lands.
    if (this.publishing) { this.passWhilePublishing = at; return; }
    this.publishing = true;
    this.publishedMs = at.getTime();
    lease.put(keys.alive(this.self.name)).value(this.aliveValue()).then(() => undefined, (e) => {
      this.publishedMs = 0;
      this.log.debug('publishing the last pass failed', { error: castError(e).message });
    }).finally(() => {
      this.publishing = false;
      const next = this.passWhilePublishing;
      this.passWhilePublishing = undefined;
      if (next) this.notePass(next);
    });
  }

  private async register(): Promise<void> {
    this.since = this.now().toISOString();
    const lease = this.etcd.lease(this.ttl, { autoKeepAlive: true });
    lease.on('lost', (e) => this.onLost(lease, e));
    try {
      await lease.put(keys.alive(this.self.name)).value(this.aliveValue());
      await this.writeRecordIfNeeded();
    } catch (e) {
      lease.release();
      throw castError(e);
    }
    if (this.stopped) {
      lease.release();
      return;
    }
    this.lease = lease;
    this.registrations++;
    this.delay = this.backoff.min;
    this.log.info('host registered', { host: this.self.name, underlayIp: this.self.underlayIp, leaseId: await lease.grant(), ttl: this.ttl });
  }

  private async writeRecordIfNeeded(): Promise<boolean> {
    const res = await this.etcd.get(keys.host(this.self.name)).exec();
    const kv = res.kvs[0];
    const stored = kv ? (JSON.parse(kv.value.toString()) as Host) : null;
    if (!recordNeedsWrite(stored, this.self)) return false;
    await this.etcd.put(keys.host(this.self.name)).value(JSON.stringify(this.record()));
    this.recordWrites++;
    this.log.info('host record written', { host: this.self.name, was: stored ? (stored.dead ? 'dead' : stored.absent ? 'absent' : 'different') : 'missing' });
    return true;
  }

  /**
   * Our record changed or vanished (seen by the watch): write it back if it
   * isn't ours as we'd write it. Calls coalesce; errors retry via the
   * registration backoff.
   */
  ensureRecord(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.ensuring) {
      this.ensureAgain = true;
      return this.ensuring;
    }
    this.ensuring = (async () => {
      do {
        this.ensureAgain = false;
        try {
          await this.writeRecordIfNeeded();
        } catch (e) {
          this.log.warn('host record write failed', { error: castError(e).message });
          const lease = this.lease;
          if (lease) this.onLost(lease, castError(e));
          return;
        }
      } while (this.ensureAgain && !this.stopped);
    })().finally(() => { this.ensuring = null; });
    return this.ensuring;
  }

  /**
   * Our alive key was deleted: put it back on the current lease, or, if etcd
   * says that lease is gone, register afresh now instead of waiting for the
   * next keepalive to find out.
   */
  async reassert(): Promise<void> {
    const lease = this.lease;
    if (!lease || this.stopped) return;
    try {
      await lease.put(keys.alive(this.self.name)).value(this.aliveValue());
      this.log.info('alive key restored', { host: this.self.name });
    } catch (e) {
      this.onLost(lease, castError(e));
    }
  }

  /** A watch on our own alive key: a delete behind our back is undone at once. */
  private watchAlive(): void {
    if (this.stopped || this.watcher) return;
    const again = (why: string) => {
      const w = this.watcher;
      this.watcher = null;
      if (w) void w.cancel().catch(() => undefined);
      if (this.stopped || this.watchRetry) return;
      this.log.debug('alive watch lost', { why });
      this.watchRetry = setTimeout(() => { this.watchRetry = null; this.watchAlive(); }, 1000);
      this.watchRetry.unref();
    };
    this.etcd.watch().key(keys.alive(this.self.name)).create().then((w) => {
      if (this.stopped) { void w.cancel().catch(() => undefined); return; }
      this.watcher = w;
      w.on('delete', () => { void this.reassert(); });
      w.on('error', (e) => { if (this.watcher === w) again(e.message); });
      w.on('end', () => { if (this.watcher === w) again('ended'); });
      // A delete between the registration and this watch would be missed: check once.
      void this.etcd.get(keys.alive(this.self.name)).exec().then((r) => { if (r.kvs.length === 0) void this.reassert(); }, () => undefined);
    }, (e) => again(castError(e).message));
  }

  private onLost(lease: Lease, e: Error): void {
    if (this.stopped || (this.lease !== null && this.lease !== lease)) return;
    this.lease = null;
    lease.release();
    this.log.warn('host lease lost, re-registering', { error: e.message });
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retry) return;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, this.backoff.max);
    this.retry = setTimeout(() => {
      this.retry = null;
      this.register().catch((e) => {
        this.log.warn('registration failed', { error: castError(e).message, retryInMs: this.delay });
        this.scheduleRetry();
      });
    }, wait);
  }

  /**
   * Stops the keepalive. The alive key stays until its TTL runs out, unless
   * `revoke` (decommissioning, tests) deletes it now. The host record stays
   * either way: only the controller deletes it, when the host is declared
   * dead or forgotten.
   */
  async stop(o: { revoke?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.watchRetry) clearTimeout(this.watchRetry);
    this.retry = this.watchRetry = null;
    const w = this.watcher;
    this.watcher = null;
    if (w) await Promise.race([w.cancel().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.ensuring;
    const lease = this.lease;
    this.lease = null;
    if (!lease) return;
    if (o.revoke) await lease.revoke().catch(() => undefined);
    else lease.release();
  }
}
