/**
 * The agent's conflist publication (`--cni-conf-dir`): the conflist is in
 * the runtime's conf dir exactly while this agent is ready.
 *
 * containerd (and CRI-O) never call CNI STATUS: a node's NetworkReady is
 * "a conflist loaded". Left in place by an init container, the conflist
 * keeps a node Ready while its agent is down, and pods keep being scheduled
 * there to fail. So, as production CNIs do, the agent writes it once it is
 * ready and removes it when it stops serving; the runtime then reports
 * NetworkPluginNotReady and the node goes NotReady.
 *
 * Once published, only the CNI socket matters (`serving`), not the rest of
 * /readyz. Losing etcd (or the registration with it) is a Berth
 * control-plane outage that every node sees at once, while pods keep
 * working: withdrawing then would make every node NotReady, and after the
 * node lifecycle controller's 300 s every pod in the cluster would be
 * evicted. ADD answers 11 (try again) and DEL journals meanwhile.
 *
 * - `publishStep` is pure: readiness and the start history give what the
 *   conf dir should hold.
 * - Before its first ready the agent leaves the conf dir as it found it for
 *   a grace period: a file a SIGKILLed predecessor left, already right, stays
 *   untouched through the restart (same inode, same mtime). A start that is
 *   not ready by the end of the grace withdraws it.
 * - Writes go through install-cni's atomic replace (temp file, fsync,
 *   rename) and are skipped when the bytes already match; removal removes
 *   only `10-berth.conflist`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { castError } from '../common/errors';
import type { Logger } from '../common/log';
import { CHAINABLE, CONFLIST_NAME, conflistText, removeConflist, writeIfDifferent, type ConflistInputs } from './install-cni';

export type PublishStep = 'publish' | 'withdraw' | 'leave';

export interface PublishState {
  /** Every readiness check holds (what the first publication waits for). */
  ready: boolean;
  /** The CNI socket is serving (what keeps a publication). */
  serving: boolean;
  /** The agent has been ready at least once since it started. */
  everReady: boolean;
  /** The agent is stopping (SIGTERM/SIGINT, or a failed start). */
  stopping: boolean;
  sinceStartMs: number;
  startGraceMs: number;
}

/** What the conf dir should hold now. */
export function publishStep(s: PublishState): PublishStep {
  if (s.stopping) return 'withdraw';
  if (s.ready) return 'publish';
  if (s.everReady) return s.serving ? 'publish' : 'withdraw';
  return s.sinceStartMs >= s.startGraceMs ? 'withdraw' : 'leave';
}

export interface PublisherOptions {
  confDir: string;
  /** Where chained plugins are looked for (each pass: a portmap installed later is chained then). */
  binDir: string;
  inputs: Omit<ConflistInputs, 'chain'>;
  /** The agent's readiness checks (the same /readyz serves). */
  readiness: () => Record<string, boolean>;
  /** The CNI socket is serving: what keeps a published conflist (see the file comment). */
  serving: () => boolean;
  /** Re-evaluate this often (default 1000 ms). */
  everyMs?: number;
  /** Before the first ready: leave the conf dir alone this long (default 30 s). */
  startGraceMs?: number;
  log: Logger;
  now?: () => number;
}

export class ConflistPublisher {
  readonly path: string;
  private readonly startedAt: number;
  private everReady = false;
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  /** The failing checks last logged while the conflist was kept (one line per change, not one a second). */
  private keptUnready: string | undefined;
  /** The last failure logged, so a failure that persists is one line, not one a second. */
  private lastError: string | undefined;

  constructor(private readonly o: PublisherOptions) {
    this.path = join(o.confDir, CONFLIST_NAME);
    this.now = o.now ?? Date.now;
    this.startedAt = this.now();
  }

  /** The bytes to publish, with the chain the bin dir has now. */
  text(): string {
    return conflistText({ ...this.o.inputs, chain: CHAINABLE.filter((p) => existsSync(join(this.o.binDir, p))) });
  }

  /** Re-evaluates every `everyMs` until stop(). */
  start(): void {
    this.timer = setInterval(() => this.sync(), this.o.everyMs ?? 1000);
    this.timer.unref();
  }

  /** One evaluation: publish, withdraw or leave. Never throws (a failure is logged and retried next time). */
  sync(): PublishStep {
    const checks = this.o.readiness();
    const ready = Object.values(checks).every(Boolean);
    if (ready) this.everReady = true;
    const serving = this.o.serving();
    const step = publishStep({ ready, serving, everReady: this.everReady, stopping: this.stopping, sinceStartMs: this.now() - this.startedAt, startGraceMs: this.o.startGraceMs ?? 30_000 });
    const failing = Object.keys(checks).filter((k) => !checks[k]).join(',');
    if (step === 'publish' && !ready && failing !== this.keptUnready) this.o.log.warn('agent not ready, still serving CNI: conflist kept', { path: this.path, failing: failing.split(',') });
    this.keptUnready = step === 'publish' && !ready ? failing : undefined;
    try {
      if (step === 'publish' && writeIfDifferent(this.path, Buffer.from(this.text()), 0o644)) this.o.log.info('cni conflist published', { path: this.path });
      if (step === 'withdraw' && removeConflist(this.o.confDir).length) {
        this.o.log.info('cni conflist withdrawn', { path: this.path, why: this.stopping ? 'stopping' : !serving ? 'not serving' : Object.keys(checks).filter((k) => !checks[k]) });
      }
      this.lastError = undefined;
    } catch (e) {
      const error = castError(e).details ?? castError(e).message;
      if (error !== this.lastError) this.o.log.warn('cni conflist publication failed', { path: this.path, step, error });
      this.lastError = error;
    }
    return step;
  }

  /** The agent stops serving: withdraw now and for good. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.stopping = true;
    this.sync();
  }
}
