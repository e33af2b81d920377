/**
 * A periodic task that one replica at a time runs: replicas campaign in an
 * etcd election, and only the leader ticks, every periodMs. A failed
 * campaign (lost lease, etcd gone) stops the ticks and campaigns again a
 * second later. Winning after stop() began resigns at once, so no tick
 * starts that nobody will clear. The expirer and the host reaper are each
 * one of these; what they do on a tick is fenced in etcd either way, so two
 * leaders for a moment could not do harm.
 */
import type { Campaign, Etcd3 } from 'etcd3';
import type { Logger } from '../common/log';

export interface LeadershipOptions {
  /** etcd election name (common/keys.ts). */
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
}

export class Leadership {
  private campaign: Campaign | null = null;
  private timer: NodeJS.Timeout | null = null;
  private leader = false;
  private stopped = false;

  constructor(private readonly etcd: Etcd3, private readonly log: Logger, private readonly o: LeadershipOptions) {}

  get isLeader(): boolean { return this.leader; }

  start(): void {
    if (this.stopped) return;
    const c = this.etcd.election(this.o.election, 10).campaign(this.o.replicaId);
    this.campaign = c;
    c.on('elected', () => {
      if (this.stopped || this.campaign !== c) { void c.resign().catch(() => undefined); return; }
      this.leader = true;
      this.o.onElected?.();
      this.log.info(`elected ${this.o.role}`, { replica: this.o.replicaId });
      this.timer = setInterval(this.o.tick, this.o.periodMs);
      this.timer.unref();
      if (this.o.tickOnElection) this.o.tick();
    });
    c.on('error', (e: Error) => {
      this.leader = false;
      this.clearTimer();
      if (this.stopped) return;
      this.log.warn(`${this.o.role} campaign failed, campaigning again`, { error: e.message });
      setTimeout(() => this.start(), 1000).unref();
    });
  }

  /** No tick starts after this; `drain` (the tick under way) settles before the replica resigns. */
  async stop(drain: () => Promise<unknown> | null = () => null): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await drain();
    const c = this.campaign;
    this.campaign = null;
    if (c) await c.resign().catch(() => undefined);
    this.leader = false;
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
