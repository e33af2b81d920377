/**
 * What the agent knows of the cluster: its pool, every registered host and
 * every lease of its pool, held in memory and fed by etcd watches.
 *
 * List, then watch: one read of the three ranges at a single revision R,
 * then watches from R+1, so no event is missed or seen twice. When a watch
 * cannot continue (etcd compacted past it, the stream was cancelled or
 * ended) the source relists from scratch at a new revision and watches
 * again; etcd3's own reconnects resume from the last seen revision, and
 * only a compaction makes that fail. See agent/README-watch.md.
 *
 * The source never touches the kernel. Every change (an event, a relist)
 * calls onChange, which only marks the reconcile loop dirty: the loop reads
 * snapshot() when it next runs, so bursts of events cost one pass.
 */
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { BerthError, castError } from '../common/errors';
import { rangeAll } from '../common/etcd-paged';
import { keys, parseKey } from '../common/keys';
import type { Logger } from '../common/log';
import type { Host, Lease, LeaseView, Pool } from '../common/records';

export interface Snapshot {
  pool: Pool | undefined;
  /** Every pool's record (egress masquerade needs all pool CIDRs). */
  pools: Pool[];
  hosts: Host[];
  leases: LeaseView[];
  /** The etcd revision the snapshot reflects. */
  revision: bigint;
}

/**
 * Pure: the in-memory cache behind the source. A put never replaces a value
 * written at a higher revision, so a late or replayed event can't resurrect
 * an older binding (the fencing token is the lease's mod revision).
 */
export class ClusterCache {
  pool: { value: Pool; mod: bigint } | undefined;
  readonly pools = new Map<string, { value: Pool; mod: bigint }>();
  readonly hosts = new Map<string, { value: Host; mod: bigint }>();
  readonly leases = new Map<string, LeaseView>();
  revision = 0n;

  constructor(readonly poolName: string) {}

  clear(): void {
    this.pool = undefined;
    this.pools.clear();
    this.hosts.clear();
    this.leases.clear();
    this.revision = 0n;
  }

  /** Applies one key change; returns whether it mattered to this agent. */
  apply(type: 'put' | 'delete', key: string, value: string, modRevision: bigint): boolean {
    if (modRevision > this.revision) this.revision = modRevision;
    const k = parseKey(key);
    switch (k.type) {
      case 'pool': {
        const other = this.pools.get(k.pool);
        if (other && other.mod > modRevision) return false;
        if (type === 'put') this.pools.set(k.pool, { value: JSON.parse(value) as Pool, mod: modRevision });
        else this.pools.delete(k.pool);
        if (k.pool !== this.poolName) return true;
        if (this.pool && this.pool.mod > modRevision) return false;
        this.pool = type === 'put' ? { value: JSON.parse(value) as Pool, mod: modRevision } : undefined;
        return true;
      }
      case 'host': {
        const cur = this.hosts.get(k.host);
        if (cur && cur.mod > modRevision) return false;
        if (type === 'put') this.hosts.set(k.host, { value: JSON.parse(value) as Host, mod: modRevision });
        else this.hosts.delete(k.host);
        return true;
      }
      case 'lease': {
        if (k.pool !== this.poolName) return false;
        const cur = this.leases.get(k.ip);
        if (cur && BigInt(cur.revision) > modRevision) return false;
        if (type === 'put') this.leases.set(k.ip, { ...(JSON.parse(value) as Lease), revision: String(modRevision) });
        else this.leases.delete(k.ip);
        return true;
      }
      default:
        return false;
    }
  }

  snapshot(): Snapshot {
    return {
      pool: this.pool?.value,
      pools: [...this.pools.values()].map((p) => p.value),
      hosts: [...this.hosts.values()].map((h) => h.value),
      leases: [...this.leases.values()],
      revision: this.revision,
    };
  }
}

export interface SourceOptions {
  /** Called after every change; must only mark something dirty. */
  onChange: (why: string) => void;
  /** Test hook: runs between the list and the watch (e.g. to compact etcd there). */
  afterList?: (revision: bigint) => Promise<void>;
  /** Delay before retrying a failed relist: doubles up to max. */
  backoffMs?: { min: number; max: number };
}

export class EtcdSource {
  readonly cache: ClusterCache;
  /** Completed relists (the first list counts); tests watch it grow after a compaction. */
  relists = 0;
  private watchers: Watcher[] = [];
  private generation = 0;
  private readonly dead = new WeakSet<Watcher>();
  private closed = false;
  private relisting: Promise<void> | null = null;
  private readonly poolWaiters: (() => void)[] = [];

  constructor(
    private readonly etcd: Etcd3,
    readonly poolName: string,
    private readonly log: Logger,
    private readonly o: SourceOptions,
  ) {
    this.cache = new ClusterCache(poolName);
  }

  /**
   * Lists and starts watching. If etcd is unreachable it retries with
   * backoff, logging each failure's reason: in the background by default,
   * or, with waitMs, until the first list succeeds, throwing
   * StoreUnavailable (with the last reason) when waitMs runs out first.
   */
  async start(o: { waitMs?: number } = {}): Promise<void> {
    try {
      await this.relist();
      return;
    } catch (e) {
      const recovering = this.recover(failureReason(e));
      if (o.waitMs === undefined) return void recovering;
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), o.waitMs)));
      const timedOut = await Promise.race([recovering.then(() => false), deadline]);
      clearTimeout(timer);
      if (!timedOut || this.relists > 0) return;
      this.closed = true;
      this.wakeRetry?.();
      throw new BerthError('StoreUnavailable', `no answer from etcd within ${o.waitMs / 1000} s: ${this.lastFailure}`, 'etcd unreachable at start');
    }
  }

  /** Why the last list failed (for logs and the start-up error). */
  lastFailure = '';
  /** Cuts the current retry wait short (close()). */
  private wakeRetry: (() => void) | undefined;

  snapshot(): Snapshot {
    return this.cache.snapshot();
  }

  /** Resolves once the pool record is known (the agent can't build devices before). */
  poolReady(): Promise<Pool> {
    const p = this.cache.pool?.value;
    if (p) return Promise.resolve(p);
    return new Promise((resolve) => this.poolWaiters.push(() => resolve(this.cache.pool!.value)));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wakeRetry?.();
    await this.dropWatchers();
  }

  private relist(): Promise<void> {
    if (!this.relisting) this.relisting = this.doRelist().finally(() => (this.relisting = null));
    return this.relisting;
  }

  private async dropWatchers(): Promise<void> {
    this.generation++; // events still in flight from old watchers are ignored
    const old = this.watchers.filter((w) => !this.dead.has(w));
    this.watchers = [];
    // etcd3 never settles cancel() of a watch etcd already cancelled, hence
    // the dead set; the timeout guards against any other lost reply.
    await Promise.all(old.map((w) => Promise.race([w.cancel().catch(() => undefined), delay(2000)])));
  }

  private async doRelist(): Promise<void> {
    await this.dropWatchers();
    const first = await this.etcd.getAll().prefix(keys.poolPrefix).exec(); // every pool: their CIDRs shape egress
    const rev = first.header.revision;
    // Paged (common/etcd-paged.ts): a pool's leases in one message pass the gRPC limit past ~10k.
    const [hosts, leases] = await Promise.all([
      rangeAll(this.etcd, keys.hostPrefix, { revision: rev }),
      rangeAll(this.etcd, keys.poolLeasePrefix(this.poolName), { revision: rev }),
    ]);
    this.cache.clear();
    for (const res of [first, hosts, leases]) for (const kv of res.kvs) this.applyKv('put', kv);
    this.cache.revision = BigInt(rev);
    this.relists++;
    this.log.info('cluster listed', { revision: rev, hosts: hosts.kvs.length, leases: leases.kvs.length });
    this.notify('relist');
    if (this.o.afterList) await this.o.afterList(BigInt(rev));
    if (this.closed) return;
    const from = String(BigInt(rev) + 1n);
    // Listeners go on as each watch connects, not after all three: etcd may
    // cancel one (compaction) or send its first event while the others are
    // still being created, and an 'error' with no listener would throw.
    const gen = this.generation;
    const current = () => !this.closed && this.generation === gen;
    const created: Watcher[] = (this.watchers = []);
    const attach = (w: Watcher): Watcher => {
      created.push(w);
      w.on('put', (kv) => { if (current()) this.onEvent('put', kv); });
      w.on('delete', (kv) => { if (current()) this.onEvent('delete', kv); });
      // 'error' is how etcd3 reports a cancelled watch, compaction included;
      // 'end' a stream that closed under us. Either way: start over.
      w.on('error', (e) => { this.dead.add(w); if (current()) void this.recover(e.message); });
      w.on('end', () => { this.dead.add(w); if (current()) void this.recover('watch ended'); });
      return w;
    };
    await Promise.all([
      this.etcd.watch().prefix(keys.poolPrefix).startRevision(from).create().then(attach),
      this.etcd.watch().prefix(keys.hostPrefix).startRevision(from).create().then(attach),
      this.etcd.watch().prefix(keys.poolLeasePrefix(this.poolName)).startRevision(from).create().then(attach),
    ]);
    if (this.closed) await this.dropWatchers();
  }

  private applyKv(type: 'put' | 'delete', kv: IKeyValue): boolean {
    return this.cache.apply(type, kv.key.toString(), kv.value.toString(), BigInt(kv.mod_revision));
  }

  private onEvent(type: 'put' | 'delete', kv: IKeyValue): void {
    if (this.applyKv(type, kv)) this.notify(`${type} ${kv.key.toString()}`);
  }

  private notify(why: string): void {
    if (this.cache.pool) for (const w of this.poolWaiters.splice(0)) w();
    this.o.onChange(why);
  }

  private async recover(why: string): Promise<void> {
    this.lastFailure = why;
    this.log.warn(this.relists === 0 ? 'etcd unreachable, retrying' : 'watch lost, relisting', { why });
    // A relist already under way may have started before this loss: let it
    // finish, then start a fresh one rather than trusting its watches.
    if (this.relisting) await this.relisting.catch(() => undefined);
    const b = this.o.backoffMs ?? { min: 100, max: 5000 };
    for (let wait = b.min; !this.closed; wait = Math.min(wait * 2, b.max)) {
      try {
        await this.relist();
        return;
      } catch (e) {
        const reason = failureReason(e);
        // etcd3's circuit breaker answers for the client after a failure and
        // names no cause: keep the last real one.
        if (!/circuit breaker is open/.test(reason)) this.lastFailure = reason;
        this.log.warn('relist failed', { error: reason, cause: this.lastFailure, retryInMs: wait });
        // Not unref'd: at start-up this wait may be all that keeps the
        // process alive, and an agent that silently exits 0 while etcd is
        // down is worse than one that waits. close() cuts it short.
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          this.wakeRetry = () => { clearTimeout(t); r(); };
        });
        this.wakeRetry = undefined;
      }
    }
  }
}

/** A failure's message with its details: "etcd unreachable" alone names no cause. */
function failureReason(e: unknown): string {
  const err = castError(e);
  const text = err.details && err.details !== err.message ? `${err.message}: ${err.details}` : err.message;
  // grpc-js folds a TLS error's multi-line text and an empty "Resolution note" in: one line, no noise.
  return text.replace(/\s*Resolution note:\s*$/, '').replace(/\s+/g, ' ').trim();
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
