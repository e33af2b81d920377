/**
 * The agent's Prometheus metrics (docs/metrics.md lists them all), served
 * with /healthz and /readyz on --metrics-listen (common/metrics-http.ts).
 *
 * CNI verbs are timed around the handler the CNI socket serves (journal
 * replays are counted apart, as replays); reconcile passes are told by the
 * reconciler's onPass. Everything that is a level (endpoints, journal depth,
 * fast-path map sizes, registration, pass age) is read at scrape time from
 * the agent's own state, so a scrape never reaches etcd or the controller.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AgentRequest } from '../common/agent-protocol';
import type { LeaseView } from '../common/records';
import type { CniHandler } from './cni-api';
import type { ReplayResult } from './journal-replay';
import type { PassResult } from './reconciler';

/** Seconds: a CNI ADD is a controller round trip plus netlink work, 5 ms .. 1 s. */
const CNI_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const PASS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

const VERBS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'];

export interface AgentState {
  /** Leases of the pool as the agent's watch sees them; undefined before the first list. */
  leases(): LeaseView[] | undefined;
  journalDepth(): Promise<number>;
  fastPathSizes(): { local: number; remote: number } | undefined;
  registered(): boolean;
  registrations(): number;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly cniSeconds = new Histogram({
    name: 'berth_agent_cni_request_duration_seconds',
    help: 'CNI requests served on the agent socket, by verb and result code (0 = success, else the CNI error code).',
    labelNames: ['verb', 'code'] as const,
    buckets: CNI_BUCKETS,
    registers: [this.registry],
  });
  private readonly passSeconds = new Histogram({
    name: 'berth_agent_reconcile_pass_duration_seconds',
    help: 'Reconcile passes: observe, plan and apply, fast path included.',
    buckets: PASS_BUCKETS,
    registers: [this.registry],
  });
  private readonly passes = new Counter({
    name: 'berth_agent_reconcile_passes_total',
    help: 'Reconcile passes, by result: ok (every op applied) or failed (an op refused, or the pass threw; it is retried).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  private readonly ops = new Counter({
    name: 'berth_agent_reconcile_ops_total',
    help: 'Kernel ops of reconcile passes, by stage: planned, applied, failed.',
    labelNames: ['stage'] as const,
    registers: [this.registry],
  });
  private readonly replays = new Counter({
    name: 'berth_agent_del_journal_replays_total',
    help: 'Journalled DELs replayed, by result: replayed (done, entry removed), failed (kept for the next replay), superseded (a later ADD won; dropped).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  private lastOkPassMs: number | undefined;

  constructor(private readonly now: () => number = Date.now) {
    collectDefaultMetrics({ register: this.registry });
    for (const stage of ['planned', 'applied', 'failed']) this.ops.inc({ stage }, 0);
    for (const result of ['ok', 'failed']) this.passes.inc({ result }, 0);
  }

  /** Binds the scrape-time gauges to the agent's state. */
  observe(host: string, s: AgentState): void {
    const r = [this.registry];
    const self = this;
    new Gauge({
      name: 'berth_agent_endpoints', help: 'Leases of the pool bound on each host, as this agent\'s watch sees them (what it routes).',
      labelNames: ['host'] as const, registers: r,
      collect() {
        this.reset();
        const counts = new Map<string, number>([[host, 0]]);
        for (const l of s.leases() ?? []) if (l.state === 'bound' && l.binding) counts.set(l.binding.host, (counts.get(l.binding.host) ?? 0) + 1);
        for (const [h, n] of counts) this.set({ host: h }, n);
      },
    });
    new Gauge({
      name: 'berth_agent_del_journal_depth', help: 'DEL journal entries waiting to be replayed.', registers: r,
      async collect() { this.set(await s.journalDepth()); },
    });
    new Gauge({
      name: 'berth_agent_fastpath_map_entries', help: 'Entries of the fast-path BPF maps: local (pods on this host) and remote (pods behind VXLAN). Absent without --fast-path.',
      labelNames: ['map'] as const, registers: r,
      collect() {
        this.reset();
        const sizes = s.fastPathSizes();
        if (sizes) { this.set({ map: 'local' }, sizes.local); this.set({ map: 'remote' }, sizes.remote); }
      },
    });
    new Gauge({
      name: 'berth_agent_registered', help: '1 while the agent holds its alive key on a live etcd lease.', registers: r,
      collect() { this.set(s.registered() ? 1 : 0); },
    });
    new Gauge({
      name: 'berth_agent_registrations', help: 'Times the agent registered on a fresh etcd lease since it started (more than 1: the lease was lost and won back).', registers: r,
      collect() { this.set(s.registrations()); },
    });
    new Gauge({
      name: 'berth_agent_last_successful_pass_timestamp_seconds', help: 'Unix time the last reconcile pass with no failed op finished.', registers: r,
      collect() { if (self.lastOkPassMs !== undefined) this.set(self.lastOkPassMs / 1000); },
    });
    new Gauge({
      name: 'berth_agent_last_successful_pass_age_seconds', help: 'Seconds since the last reconcile pass with no failed op finished.', registers: r,
      collect() { if (self.lastOkPassMs !== undefined) this.set((self.now() - self.lastOkPassMs) / 1000); },
    });
  }

  /** The handler the CNI socket serves, timed per verb and result code. */
  timeCni(handler: CniHandler): CniHandler {
    return async (req: AgentRequest) => {
      const t0 = performance.now();
      const resp = await handler(req);
      const code = resp.ok ? '0' : String(resp.error.cniCode);
      const verb = VERBS.includes(req.verb) ? req.verb : 'other';
      this.cniSeconds.observe({ verb, code }, (performance.now() - t0) / 1000);
      return resp;
    };
  }

  pass(r: PassResult): void {
    this.passSeconds.observe(r.ms / 1000);
    this.passes.inc({ result: r.failed > 0 ? 'failed' : 'ok' });
    this.ops.inc({ stage: 'planned' }, r.ops);
    this.ops.inc({ stage: 'applied' }, r.applied);
    this.ops.inc({ stage: 'failed' }, r.failed);
    if (r.failed === 0) this.lastOkPassMs = this.now();
  }

  /** One journalled DEL replayed (agent/journal-replay.ts). */
  replayed(result: ReplayResult): void {
    this.replays.inc({ result });
  }
}
