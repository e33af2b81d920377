/**
 * Runs the firewall sync (agent/kernel/firewall.ts) beside the reconcile
 * loop rather than inside its passes: spawning `nft` takes milliseconds,
 * and a route for a moved address must never wait behind it. Each pass
 * hands over the tables it wants (kick); one sync runs at a time, kicks that
 * arrive meanwhile coalesce into one follow-up sync of the newest tables,
 * and a verify request (start, resync, retry passes) is never lost in the
 * coalescing. A refused sync is retried after a delay. Each sync logs one
 * JSON line:
 *   {"msg":"firewall pass","ops":0|1,"verify":bool,"ms":n,"error"?:"..."}
 */
import { castError } from '../common/errors';
import type { Logger } from '../common/log';
import type { FirewallWant } from './firewall';

export interface FirewallPass {
  ops: number;
  verify: boolean;
  ms: number;
  error?: string;
}

export type FirewallSyncFn = (want: FirewallWant, o: { verify: boolean }) => Promise<number>;

export class FirewallLoop {
  private pending: { want: FirewallWant; verify: boolean } | undefined;
  private running: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private waiters: ((p: FirewallPass) => void)[] = [];
  /** Kicks so far; a sync serves every kick made before it took its tables. */
  private kicks = 0;
  private applyWaiters: { kick: number; resolve: (p: FirewallPass) => void }[] = [];

  constructor(private readonly sync: FirewallSyncFn, private readonly log: Logger, private readonly retryMs = 500) {}

  /** Asks for a sync to want; never waits. */
  kick(want: FirewallWant, o: { verify: boolean }): void {
    if (this.stopped) return;
    this.kicks++;
    this.pending = { want, verify: o.verify || !!this.pending?.verify };
    this.running ??= this.loop();
  }

  /**
   * Kicks, then resolves with the first sync that took these tables or newer
   * ones (a CNI ADD waits here until its pod may send). A refused sync
   * resolves it too, with its error: the retry is the loop's business, not
   * the caller's. After stop() it resolves at once, with no sync.
   */
  apply(want: FirewallWant): Promise<FirewallPass> {
    if (this.stopped) return Promise.resolve({ ops: 0, verify: false, ms: 0, error: 'firewall loop stopped' });
    this.kick(want, { verify: false });
    const kick = this.kicks;
    return new Promise((resolve) => this.applyWaiters.push({ kick, resolve }));
  }

  /** Resolves with the next sync to complete. */
  next(): Promise<FirewallPass> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** No sync starts after this; waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.running;
    for (const w of this.applyWaiters.splice(0)) w.resolve({ ops: 0, verify: false, ms: 0, error: 'firewall loop stopped' });
  }

  private async loop(): Promise<void> {
    while (this.pending && !this.stopped) {
      const p = this.pending;
      this.pending = undefined;
      const served = this.kicks;
      const t0 = performance.now();
      let ops = 0;
      let error: string | undefined;
      try {
        ops = await this.sync(p.want, { verify: p.verify });
      } catch (e) {
        const err = castError(e);
        error = err.details ?? err.message;
      }
      const r: FirewallPass = { ops, verify: p.verify, ms: Math.round((performance.now() - t0) * 100) / 100, ...(error ? { error } : {}) };
      if (error) this.log.warn('firewall pass', { ...r });
      else this.log.info('firewall pass', { ...r });
      for (const w of this.waiters.splice(0)) w(r);
      this.applyWaiters = this.applyWaiters.filter((w) => (w.kick <= served ? (w.resolve(r), false) : true));
      if (error && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          if (!this.pending) this.kick(p.want, { verify: true });
        }, this.retryMs);
      }
    }
    this.running = undefined;
  }
}
