/**
 * The host record: /berth/v1/hosts/<host>, attached to an etcd lease that
 * this agent keeps alive. Peers program routes only towards registered
 * hosts, and the controller lets another host take a bound address only
 * when the binding's host key is gone. So the key's lifetime *is* the
 * host's liveness, as seen by the cluster.
 *
 * Restarts are invisible on purpose: stop() stops the keepalive but does
 * not revoke the lease. A restarted agent grants a fresh lease and re-puts
 * the key (the key follows its latest put, so the old lease expiring later
 * deletes nothing). Revoking on SIGTERM would drop every peer's routes to
 * this host and let its addresses be rebound elsewhere for the few seconds
 * a restart takes. A host that is really gone disappears when the TTL runs
 * out. If the lease is lost while running (etcd unreachable past the TTL),
 * the agent re-registers with backoff as soon as etcd answers again.
 */
import type { Etcd3, Lease } from 'etcd3';
import { castError } from '../common/errors';
import { keys } from '../common/keys';
import type { Logger } from '../common/log';
import type { Host } from '../common/records';

export const DEFAULT_HOST_TTL_SECONDS = 10;

export interface RegistrationOptions {
  ttlSeconds?: number;
  now?: () => Date;
  /** Retry delays after a failed registration: doubles from min to max. */
  backoffMs?: { min: number; max: number };
}

/** Pure: the value written under the host key. */
export function hostRecord(r: Omit<Host, 'registeredAt'>, now: Date): Host {
  return { name: r.name, underlayIp: r.underlayIp, vtepMac: r.vtepMac.toLowerCase(), vni: r.vni, pool: r.pool, registeredAt: now.toISOString() };
}

export class Registration {
  /** How many times the key was (re)written; tests watch it grow after a loss. */
  registrations = 0;
  private lease: Lease | null = null;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  private readonly ttl: number;
  private readonly now: () => Date;
  private readonly backoff: { min: number; max: number };
  private delay: number;

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
  }

  /** The record this agent registers (registeredAt of the latest write). */
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
  }

  private async register(): Promise<void> {
    const lease = this.etcd.lease(this.ttl, { autoKeepAlive: true });
    lease.on('lost', (e) => this.onLost(lease, e));
    try {
      await lease.put(keys.host(this.self.name)).value(JSON.stringify(hostRecord(this.self, this.now())));
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

  /**
   * Our key was deleted (seen by the watch): put it back on the current
   * lease, or, if etcd says that lease is gone, register afresh now instead
   * of waiting for the next keepalive to find out.
   */
  async reassert(): Promise<void> {
    const lease = this.lease;
    if (!lease || this.stopped) return;
    try {
      await lease.put(keys.host(this.self.name)).value(JSON.stringify(hostRecord(this.self, this.now())));
      this.log.info('host key restored', { host: this.self.name });
    } catch (e) {
      this.onLost(lease, castError(e));
    }
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
   * Stops the keepalive. The key stays until its TTL runs out, unless
   * `revoke` (for `berth-agent` decommissioning and tests) deletes it now.
   */
  async stop(o: { revoke?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const lease = this.lease;
    this.lease = null;
    if (!lease) return;
    if (o.revoke) await lease.revoke().catch(() => undefined);
    else lease.release();
  }
}
