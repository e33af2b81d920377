/**
 * The host reaper: declares hosts dead whose alive key has been absent for
 * `--host-dead-after` (default 300 s), and finishes deaths that a crash or
 * a `hosts forget` left half-done. One replica at a time: replicas campaign
 * in their own etcd election (keys.electionHostReaper), and only the leader
 * checks, every `checkMs`. Every write is fenced (controller/hosts.ts), so
 * even two leaders at once could not free a lease twice or kill a live host.
 *
 * Each check costs one keys-only range read of /berth/v1/alive/ (O(hosts));
 * host records come from the watch-fed view. The absence clock is in memory
 * and restarts with each new leader (controller/host-death.ts says why).
 */
import type { Etcd3 } from 'etcd3';
import { castError } from '../common/errors';
import { keys } from '../common/keys';
import type { Logger } from '../common/log';
import { planReaper } from './host-death';
import { aliveHosts, declareDead, markAbsent, type HostsDeps } from './hosts';
import { Leadership } from './leadership';
import type { ClusterView } from './view';

export const DEFAULT_HOST_DEAD_AFTER_SECONDS = 300;

export interface HostReaperOptions {
  replicaId: string;
  deadAfterMs: number;
  checkMs: number;
  now: () => number;
}

export class HostReaper {
  private readonly leadership: Leadership;
  private stopped = false;
  private checking: Promise<void> | null = null;
  private clock = new Map<string, number>();
  private readonly deps: HostsDeps;

  constructor(etcd: Etcd3, view: ClusterView, private readonly log: Logger, private readonly opts: HostReaperOptions) {
    this.deps = { etcd, view, log, now: opts.now };
    this.leadership = new Leadership(etcd, log, {
      election: keys.electionHostReaper, replicaId: opts.replicaId, periodMs: opts.checkMs, role: 'host reaper', tickOnElection: true,
      onElected: () => { this.clock = new Map(); }, // absence counts only from what this leader sees
      tick: () => { void this.checkOnce(); },
    });
  }

  get isLeader(): boolean { return this.leadership.isLeader; }

  start(): void {
    this.leadership.start();
  }

  checkOnce(): Promise<void> {
    if (!this.checking) this.checking = this.doCheck().finally(() => { this.checking = null; });
    return this.checking;
  }

  private async doCheck(): Promise<void> {
    if (!this.leadership.isLeader || this.stopped) return;
    try {
      // No host registered: nothing to look up, and an idle controller reads nothing from etcd.
      const alive = this.deps.view.hosts.size === 0 ? new Set<string>() : await aliveHosts(this.deps.etcd);
      const hosts = [...this.deps.view.hosts.values()].map((h) => ({ record: h.value, alive: alive.has(h.value.name) }));
      const plan = planReaper(hosts, this.clock, this.opts.now(), this.opts.deadAfterMs);
      this.clock = plan.clock;
      for (const a of plan.actions) {
        if (!this.leadership.isLeader || this.stopped) return;
        try {
          if (a.kind === 'mark-absent') {
            if (await markAbsent(this.deps, a.host, a.since, a.deadAt)) this.log.info('host absent', { host: a.host, since: a.since, deadAt: a.deadAt });
          } else {
            await declareDead(this.deps, a.host, { by: 'reaper', reason: a.kind === 'declare-dead' ? a.reason : 'finishing an earlier declaration' });
          }
        } catch (e) {
          const err = castError(e);
          // HostAlive/HostNotFound: it came back or was forgotten meanwhile; the next check sees that.
          if (err.kind !== 'HostAlive' && err.kind !== 'HostNotFound') this.log.warn('host reaper step failed', { host: a.host, step: a.kind, error: err.message });
        }
      }
    } catch (e) {
      this.log.warn('host reaper check failed', { error: castError(e).message });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.leadership.stop(() => this.checking);
  }

}
