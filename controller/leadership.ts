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

export class Leadership {
  private lease: Lease | null = null;
  private watcher: Watcher | null = null;
  /** Ends the wait for the leader's key to go (stop). */
  private wake: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** The campaign under way (competing, or leading and watching its key). */
  private running: Promise<void> = Promise.resolve();
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
    if (this.stopped || this.lease) return;
    const lease = this.etcd.lease(this.o.ttlSeconds ?? 10);
    this.lease = lease;
    lease.on('lost', (e: Error) => this.fail(lease, e));
    this.running = this.compete(lease).catch((e) => this.fail(lease, castError(e)));
  }

  /** No tick starts after this; `drain` (the tick under way) settles before the replica resigns. */
  async stop(drain: () => Promise<unknown> | null = () => null): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await drain();
    const lease = this.lease;
    this.lease = null; // before the wake: the waits it ends see a stopped, not a failed, leadership
    this.wake?.();
    await this.cancelWatch();
    // The campaign may be between two calls: let it see the stop before the caller closes the client.
    await within(this.running, CANCEL_WITHIN_MS).catch(() => undefined);
    await this.cancelWatch();
    // Revoking deletes the key, so another replica takes over now rather than after the TTL.
    if (lease) await within(lease.revoke(), CANCEL_WITHIN_MS).catch(() => undefined);
    this.leader = false;
  }

  private async compete(lease: Lease): Promise<void> {
    const id = await lease.grant();
    const key = this.o.election;
    while (!this.stopped && this.lease === lease) {
      const r = await this.etcd.if(key, 'Create', '==', 0)
        .then(this.etcd.put(key).value(this.o.replicaId).lease(id))
        .else(this.etcd.get(key))
        .commit();
      const from = BigInt(r.header.revision) + 1n;
      if (this.stopped || this.lease !== lease) return; // stop() revokes the lease, and the key with it
      if (r.succeeded) {
        this.elected();
        // A leader whose key is gone (deleted by hand, or its lease expired unseen) is no longer one.
        await this.deleted(key, from);
        if (!this.stopped) this.fail(lease, new Error('leader key deleted'));
        return;
      }
      // Someone leads: wait for its key to go, from the revision just read.
      await this.deleted(key, from);
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

  private async deleted(key: string, from: bigint): Promise<void> {
    const w = await this.etcd.watch().key(key).startRevision(String(from)).create();
    this.watcher = w;
    try {
      if (this.stopped) return;
      await new Promise<void>((resolve, reject) => {
        this.wake = resolve;
        w.on('delete', () => resolve());
        w.on('error', reject);
      });
    } finally {
      this.wake = null;
      await this.cancelWatch();
    }
  }

  private async cancelWatch(): Promise<void> {
    const w = this.watcher;
    this.watcher = null;
    if (w) await within(w.cancel(), CANCEL_WITHIN_MS).catch(() => undefined);
  }

  /** The lease is lost or competing failed: stop ticking, and compete again with a new lease. */
  private fail(lease: Lease, e: Error): void {
    if (this.lease !== lease) return;
    this.lease = null;
    this.leader = false;
    this.clearTimer();
    this.wake?.();
    void this.cancelWatch();
    void lease.revoke().catch(() => undefined);
    if (this.stopped) return;
    this.log.warn(`${this.o.role} campaign failed, campaigning again`, { error: e.message });
    setTimeout(() => this.start(), RETRY_MS).unref();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** p, or a rejection after ms: a call to an etcd that went away must not hold a shutdown. */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
