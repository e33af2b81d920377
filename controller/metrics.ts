/**
 * The controller's Prometheus metrics (docs/metrics.md lists them all). One
 * registry per replica, so several replicas in one process (tests, the demo)
 * never share a series.
 *
 * Counters and histograms move where the work happens: lease operations are
 * timed around the store's bind/release/pin, etcd transactions by the
 * observer hook in controller/txn.ts (every commit of this replica's client,
 * expirer and reaper included), watch lag by waiting for the view to see
 * each committed revision. Pool usage is a collect-time read of the
 * watch-fed view: a scrape never reads etcd.
 */
import type { Etcd3 } from 'etcd3';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { castError } from '../common/errors';
import type { PoolUsage } from '../common/records';
import type { LeaseStore } from './store';
import { txnObservers } from './txn';
import type { ClusterView } from './view';

/** Seconds; lease operations and etcd transactions take 1 ms .. 1 s on a healthy cluster. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export type LeaseOp = 'bind' | 'release' | 'pin';

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly operations = new Counter({
    name: 'berth_controller_lease_operations_total',
    help: 'Lease operations answered, by operation and result (allocated, existing, released, freed, not-found, stale, pinned, or the error kind).',
    labelNames: ['op', 'result'] as const,
    registers: [this.registry],
  });
  readonly operationSeconds = new Histogram({
    name: 'berth_controller_lease_operation_duration_seconds',
    help: 'Time to answer a lease operation; op="bind",outcome="allocated" is the allocation latency of a new address.',
    labelNames: ['op', 'outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly txnSeconds = new Histogram({
    name: 'berth_controller_etcd_txn_duration_seconds',
    help: 'etcd transactions of this replica, by outcome: committed, conflict (a compare failed; the caller re-reads and retries) or error.',
    labelNames: ['outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly txnConflicts = new Counter({
    name: 'berth_controller_etcd_txn_conflicts_total',
    help: 'Transactions whose compares failed because another writer got there first; each one costs its caller a retry.',
    registers: [this.registry],
  });
  readonly watchLag = new Histogram({
    name: 'berth_controller_watch_lag_seconds',
    help: 'From a transaction of this replica committing to its watch-fed view having seen that revision.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly expirerRuns = new Counter({
    name: 'berth_controller_expirer_runs_total',
    help: 'Expiry sweeps run by this replica (only while it is the elected expirer), by result: ok or error.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly expirerFreed = new Counter({
    name: 'berth_controller_expirer_freed_total',
    help: 'Held leases whose hold lapsed and that the expirer freed.',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Binds the collect-time gauges to this replica's view, store and expirer. */
  observe(deps: { etcd: Etcd3; view: ClusterView; store: LeaseStore; isLeader: () => boolean }): void {
    const { view, store } = deps;
    const r = [this.registry];
    // The five pool gauges are collected one after another in one scrape: count the view once for all of them.
    let usage: { at: number; pools: PoolUsage[] } | undefined;
    const pools = () => {
      const now = performance.now();
      if (!usage || now - usage.at > 100) usage = { at: now, pools: store.listPools() };
      return usage.pools;
    };
    const perPool = (name: string, help: string, pick: (p: PoolUsage) => number) => new Gauge({
      name, help, labelNames: ['pool'] as const, registers: r,
      collect() {
        this.reset();
        for (const p of pools()) this.set({ pool: p.name }, pick(p));
      },
    });
    perPool('berth_controller_pool_size_addresses', 'Leasable addresses of the pool (CIDR less network, broadcast, gateway and reserved).', (p) => p.size);
    perPool('berth_controller_pool_bound_leases', 'Leases bound to a container.', (p) => p.bound);
    perPool('berth_controller_pool_held_leases', 'Leases held for their identity after a release (or because their host died).', (p) => p.held);
    perPool('berth_controller_pool_pinned_leases', 'Pinned leases (also counted in bound or held).', (p) => p.pinned);
    perPool('berth_controller_pool_free_addresses', 'Addresses neither bound nor held.', (p) => p.free);
    new Gauge({
      name: 'berth_controller_hosts', help: 'Host records in the view (registered hosts, alive or not).', registers: r,
      collect() { this.set(view.hosts.size); },
    });
    new Gauge({
      name: 'berth_controller_view_revision', help: 'The etcd revision the watch-fed view has reached.', registers: r,
      collect() { this.set(Number(view.revision)); },
    });
    new Gauge({
      name: 'berth_controller_expirer_leader', help: '1 while this replica is the elected expirer.', registers: r,
      collect() { this.set(deps.isLeader() ? 1 : 0); },
    });
    txnObservers.set(deps.etcd, (seconds, outcome, rev) => {
      this.txnSeconds.observe({ outcome }, seconds);
      if (outcome === 'conflict') this.txnConflicts.inc();
      if (rev !== null) {
        const committed = performance.now();
        void view.caughtUp(rev).then(() => this.watchLag.observe((performance.now() - committed) / 1000));
      }
    });
  }

  /** Times and counts the store's bind, release and pin (replaces them on this instance). */
  instrument(store: LeaseStore): void {
    const timed = <A extends unknown[], R>(op: LeaseOp, fn: (...a: A) => Promise<R>, result: (r: R) => string) => async (...a: A): Promise<R> => {
      const t0 = performance.now();
      try {
        const r = await fn(...a);
        const res = result(r);
        this.operations.inc({ op, result: res });
        this.operationSeconds.observe({ op, outcome: res === 'allocated' ? 'allocated' : 'ok' }, (performance.now() - t0) / 1000);
        return r;
      } catch (e) {
        this.operations.inc({ op, result: castError(e).kind });
        this.operationSeconds.observe({ op, outcome: 'error' }, (performance.now() - t0) / 1000);
        throw e;
      }
    };
    store.bind = timed('bind', store.bind.bind(store), (r) => (r.allocated ? 'allocated' : 'existing'));
    store.release = timed('release', store.release.bind(store), (r) => (r.freed ? 'freed' : r.outcome));
    store.pin = timed('pin', store.pin.bind(store), () => 'pinned');
  }

  /** Counts one expirer sweep (controller/expirer.ts onPass). */
  expirerPass(r: { ok: boolean; freed: number }): void {
    this.expirerRuns.inc({ result: r.ok ? 'ok' : 'error' });
    if (r.freed > 0) this.expirerFreed.inc(r.freed);
  }

  close(deps: { etcd: Etcd3 }): void {
    txnObservers.delete(deps.etcd);
    this.registry.clear();
  }
}
