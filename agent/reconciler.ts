/**
 * The level-triggered reconcile loop. Nothing tells it *what* changed: a
 * watch event, a relist, a CNI ADD/DEL or the resync timer only mark it
 * dirty, and the next pass recomputes everything:
 *
 *   ensure devices -> observe(kernel) -> desiredState(snapshot) -> planChanges -> apply
 *
 * One pass runs at a time; marks that arrive during a pass coalesce into
 * one follow-up pass. An empty plan writes nothing, which is what makes an
 * agent restart invisible to the kernel. A pass whose ops the kernel
 * refused is retried after a short delay (the next observe sees whatever is
 * still missing). Each pass logs one JSON line:
 *   {"msg":"reconcile pass","pass":N,"ops":n,"applied":n,"failed":n,"ms":n,"why":"..."}
 */
import { castError } from '../common/errors';
import type { Logger } from '../common/log';
import type { Desired, DeviceSpec } from './desired';
import { ensureBridge, ensureVxlan, readSysctl, writeSysctl } from './kernel';
import type { Netlink } from './kernel/nl';
import { apply, observe } from './kernel/state';
import { planChanges, type KernelState, type Op } from './plan';

export interface PassResult {
  pass: number;
  ops: number;
  applied: number;
  failed: number;
  ms: number;
  /** What marked the loop dirty (the first mark since the previous pass). */
  why: string;
  plan: Op[];
}

export interface ReconcilerOptions {
  netlink: Netlink;
  /** The state to converge to, or undefined while the agent can't know it yet (no pool). */
  desired: () => Desired | undefined;
  log: Logger;
  /** Periodic pass even without events, to repair changes made behind our back. 0 disables. */
  resyncMs?: number;
  /** Delay before retrying a pass that had failed ops or threw. */
  retryMs?: number;
  /** Replaces observe/apply (benchmarks count kernel time separately); defaults to the real kernel. */
  kernel?: { observe(nl: Netlink): Promise<KernelState>; apply: typeof apply; ensureDevices?: typeof ensureDevices };
  /**
   * Hands desired.firewall to the firewall loop (agent/firewall-loop.ts) after
   * each pass; never waits. verify: read the live tables back even if nothing changed.
   */
  firewall?: (want: NonNullable<Desired['firewall']>, o: { verify: boolean }) => void;
  /** Runs after apply each pass (the fast path's maps); returns its change count. */
  afterApply?: (desired: Desired, nl: Netlink) => Promise<{ ops: number; failed: string[] }>;
  /** Told every completed pass (agent/metrics.ts). */
  onPass?: (r: PassResult) => void;
  /**
   * Lets work in progress finish before an event pass starts (CNI requests:
   * a pass in the middle of an ADD delays its answer, and the next request's
   * pass catches up with both). Bounded by the caller; start, resync and
   * retry passes never wait.
   */
  yieldTo?: () => Promise<void>;
}

/**
 * Device settings that are not part of the per-pass plan: created once and
 * re-verified every pass (ensureX writes only what differs).
 */
export async function ensureDevices(sock: Netlink, d: DeviceSpec): Promise<void> {
  await ensureBridge(sock, d.bridge);
  await ensureVxlan(sock, d.vxlan);
}

/**
 * Host sysctls; returns warnings for settings Berth needs but leaves to the
 * operator (docs/dataplane.md "Forwarding").
 *
 * rp_filter: loose (2) on berth0, off (0) on berth.vxlan. berth.vxlan has no
 * IPv4 address, and the kernel's source validation fails every packet that
 * arrives on an address-less device unless rp_filter is 0 there
 * (fib_validate_source: no address means no "last resort" pass). Those are
 * exactly the packets whose reverse path is the underlay, not the overlay:
 * a remote host's own traffic to a local pod, a remote host's replies to a
 * local pod, and replies from a hostPort DNAT on another host. The kernel
 * uses max(conf/all, conf/<dev>), so a non-zero conf/all still breaks them.
 */
export function ensureSysctls(devices: DeviceSpec): string[] {
  writeSysctl(undefined, 'net/ipv4/ip_forward', '1');
  writeSysctl(undefined, `net/ipv4/conf/${devices.bridge.name}/rp_filter`, '2');
  writeSysctl(undefined, `net/ipv4/conf/${devices.vxlan.name}/rp_filter`, '0');
  // Two local pods talk through berth0 (in and out of the same device), so the
  // kernel would tell the sender to go direct with an ICMP redirect. The pod
  // caches that, and when the peer's address moves to another host the cached
  // redirect blackholes it. The kernel ORs "all" with the device: clear both.
  writeSysctl(undefined, 'net/ipv4/conf/all/send_redirects', '0');
  writeSysctl(undefined, `net/ipv4/conf/${devices.bridge.name}/send_redirects`, '0');
  const all = readSysctl('net/ipv4/conf/all/rp_filter');
  return all === '0' ? [] : [`net.ipv4.conf.all.rp_filter is ${all}: hosts cannot reach pods on other hosts (and hostPorts fail from remote pods) until it is 0; Berth leaves host-wide settings to the operator`];
}

/** Passes that read the firewall back even when the wanted tables didn't change. */
const VERIFYING_PASSES = new Set(['start', 'resync', 'retry', 'relist', 'manual']);

export class Reconciler {
  /** Completed passes. */
  passes = 0;
  lastPass: PassResult | undefined;
  private dirty: string | null = null;
  private running = false;
  /** True from the moment a pass reads its input until it completes. */
  private inPass = false;
  /** The devices ensureDevices last made right (and no pass failed since): event passes wanting the same skip it. */
  private devicesChecked: string | undefined;
  private stopped = true;
  private scheduled: NodeJS.Immediate | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private waiters: { after: number; resolve: (r: PassResult) => void }[] = [];
  private idle: Promise<void> = Promise.resolve();
  private readonly kernel: NonNullable<ReconcilerOptions['kernel']>;

  constructor(private readonly o: ReconcilerOptions) {
    this.kernel = o.kernel ?? { observe: (nl) => observe(nl), apply };
  }

  start(): void {
    this.stopped = false;
    if (this.o.resyncMs) this.resyncTimer = setInterval(() => this.markDirty('resync'), this.o.resyncMs);
    this.markDirty('start');
  }

  /** Waits for a running pass to finish; no further pass starts after. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.scheduled) clearImmediate(this.scheduled);
    this.resyncTimer = this.retryTimer = this.scheduled = null;
    await this.idle;
  }

  /** Asks for a pass soon. Never waits and never runs one inline. */
  markDirty(why: string): void {
    if (this.dirty === null) this.dirty = why;
    if (this.stopped || this.running || this.scheduled) return;
    this.scheduled = setImmediate(() => {
      this.scheduled = null;
      void this.loop();
    });
  }

  /** Resolves with the first pass that *starts* after this call and completes. */
  waitForPass(): Promise<PassResult> {
    // A pass already running may have read its input before the caller's change.
    const after = this.passes + (this.inPass ? 1 : 0);
    return new Promise((resolve) => this.waiters.push({ after, resolve }));
  }

  /** Runs passes until nothing is dirty. */
  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    let done!: () => void;
    this.idle = new Promise((r) => (done = r));
    try {
      while (this.dirty !== null && !this.stopped) {
        if (this.o.yieldTo && !VERIFYING_PASSES.has(this.dirty)) await this.o.yieldTo();
        if (this.dirty === null || this.stopped) break;
        const why = this.dirty;
        this.dirty = null;
        const r = await this.pass(why);
        if (r.failed > 0) {
          this.devicesChecked = undefined;
          this.retrySoon();
        }
      }
    } finally {
      this.running = false;
      done();
    }
  }

  private retrySoon(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.markDirty('retry');
    }, this.o.retryMs ?? 500);
  }

  /** One pass. Exported behaviour for benchmarks via runPass(). */
  private async pass(why: string): Promise<PassResult> {
    const t0 = performance.now();
    this.inPass = true;
    let plan: Op[] = [];
    let applied = 0;
    let failed = 0;
    let fastPathOps: number | undefined;
    let error: string | undefined;
    try {
      const desired = this.o.desired();
      if (desired) {
        // The devices are checked on start, resync and retry passes, and when
        // the wanted devices changed (a device deleted behind our back makes
        // an event pass fail, and its retry repairs it): an event pass after
        // every CNI ADD need not look them up again, and under a burst of
        // ADDs each lookup waits for the kernel's RTNL behind the veths
        // being created.
        const devices = desired.devices ? JSON.stringify(desired.devices) : undefined;
        if (desired.devices && (VERIFYING_PASSES.has(why) || this.devicesChecked !== devices)) {
          await (this.kernel.ensureDevices ?? ensureDevices)(this.o.netlink, desired.devices);
          this.devicesChecked = devices;
        }
        const actual = await this.kernel.observe(this.o.netlink);
        plan = planChanges(desired, actual);
        const res = await this.kernel.apply(this.o.netlink, plan);
        applied = res.applied;
        failed = res.failed.length;
        for (const f of res.failed.slice(0, 5)) this.o.log.warn('kernel refused op', { op: f.op, error: castError(f.error).message });
        if (this.o.firewall && desired.firewall) this.o.firewall(desired.firewall, { verify: VERIFYING_PASSES.has(why) });
        if (this.o.afterApply) {
          const extra = await this.o.afterApply(desired, this.o.netlink);
          fastPathOps = extra.ops;
          failed += extra.failed.length;
          for (const f of extra.failed.slice(0, 5)) this.o.log.warn('fast path refused', { error: f });
        }
      }
    } catch (e) {
      const err = castError(e);
      error = err.details ? `${err.message}: ${err.details}` : err.message;
      failed = Math.max(1, failed);
    }
    const ms = Math.round((performance.now() - t0) * 100) / 100;
    this.passes++;
    this.inPass = false;
    const r: PassResult = { pass: this.passes, ops: plan.length, applied, failed, ms, why, plan };
    this.lastPass = r;
    this.o.onPass?.(r);
    this.o.log.info('reconcile pass', {
      pass: r.pass, ops: r.ops, applied, failed, ms, why, ...(fastPathOps !== undefined ? { fastPathOps } : {}), ...(error ? { error } : {}),
    });
    const ready = this.waiters.filter((w) => w.after < this.passes);
    this.waiters = this.waiters.filter((w) => w.after >= this.passes);
    for (const w of ready) w.resolve(r);
    return r;
  }

  /** Runs exactly one pass now (benchmarks, tests); must not overlap the loop. */
  async runPass(why = 'manual'): Promise<PassResult> {
    if (this.running) throw new Error('a pass is already running');
    this.running = true;
    try {
      return await this.pass(why);
    } finally {
      this.running = false;
    }
  }
}
