/**
 * An in-memory view of Berth's etcd state (pools, leases, identities, hosts),
 * fed by one prefix watch, so choosing a free address never scans etcd.
 *
 * The view is a hint, never the authority: every write is a transaction whose
 * compares re-check what the view said, and a failed compare falls back to a
 * fresh read. When the watch cannot resume (compaction, a lost stream), the
 * view relists at one revision and starts watching after it. The relist is
 * paged (common/etcd-paged.ts) and builds a fresh state that replaces the old
 * one only when complete, so readers never see half a list.
 *
 * Besides the maps the view keeps what per-request answers need without a
 * scan: lease counts per pool and state (`pools ls|show`) and per host
 * (`hosts ls`), maintained on every change. Subscribers (the expirer) hear of
 * every lease change, of every history event written, and of every relist.
 */
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { pagedRange } from '../common/etcd-paged';
import { keys, parseKey, ROOT } from '../common/keys';
import { RevisionWaiters } from './revision-waiters';
import type { Logger } from '../common/log';
import type { Host, LeaseView, Pool } from '../common/records';

export interface Versioned<T> { value: T; mod: string }

/**
 * How long a write's answer, or a refusal decided from the view, waits for
 * the view to reach a revision before going ahead without it.
 */
export const VIEW_CATCH_UP_MS = 2000;

export interface LeaseCounts { bound: number; held: number; pinned: number }

export interface ViewListener {
  /** A lease was put (lease) or deleted (null). */
  lease?(pool: string, ip: string, lease: LeaseView | null): void;
  /** A history event was written for this address (ip) or identity. */
  event?(key: { ip: string } | { identity: string }): void;
  /** The view was rebuilt from a list: re-derive anything built from lease changes. */
  reset?(): void;
}

class State {
  readonly pools = new Map<string, Versioned<Pool>>();
  readonly leases = new Map<string, Map<string, LeaseView>>();
  readonly identities = new Map<string, Map<string, Versioned<string>>>();
  readonly hosts = new Map<string, Versioned<Host>>();
  readonly poolCounts = new Map<string, LeaseCounts>();
  readonly hostCounts = new Map<string, number>();
}

export class ClusterView {
  private s = new State();
  private readonly revs = new RevisionWaiters();
  private watcher: Watcher | null = null;
  private closed = false;
  private relisting: Promise<void> | null = null;
  private readonly listeners = new Set<ViewListener>();

  constructor(private readonly etcd: Etcd3, private readonly log: Logger) {}

  get pools(): Map<string, Versioned<Pool>> { return this.s.pools; }
  /** pool -> ip -> lease */
  get leases(): Map<string, Map<string, LeaseView>> { return this.s.leases; }
  /** pool -> identity -> {ip, mod} */
  get identities(): Map<string, Map<string, Versioned<string>>> { return this.s.identities; }
  get hosts(): Map<string, Versioned<Host>> { return this.s.hosts; }

  async start(): Promise<void> {
    await this.relist();
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.watcher;
    this.watcher = null;
    if (w) await cancelWithin(w, 2000);
  }

  subscribe(l: ViewListener): () => void {
    this.listeners.add(l);
    return () => { this.listeners.delete(l); };
  }

  leasesOf(pool: string): Map<string, LeaseView> {
    return mapOf(this.s.leases, pool);
  }

  identitiesOf(pool: string): Map<string, Versioned<string>> {
    return mapOf(this.s.identities, pool);
  }

  /** Leases per state in a pool, maintained on every change (no scan). */
  countsOf(pool: string): LeaseCounts {
    return { ...(this.s.poolCounts.get(pool) ?? { bound: 0, held: 0, pinned: 0 }) };
  }

  /** Leases bound on a host, maintained on every change (no scan). */
  leasesOnHost(host: string): number {
    return this.s.hostCounts.get(host) ?? 0;
  }

  /** Listed and watching: false before the first list and while relisting (readiness, controller/app.ts). */
  get synced(): boolean { return this.watcher !== null && this.relisting === null; }

  /** The newest etcd revision the view has applied. */
  get revision(): bigint { return this.revs.revision; }

  /** Resolves once the view has seen revision `rev` (used after our own writes). */
  caughtUp(rev: bigint): Promise<void> { return this.revs.caughtUp(rev); }

  /** caughtUp, bounded (reads that must see a client's writes): false after `ms`. */
  caughtUpWithin(rev: bigint, ms: number): Promise<boolean> { return this.revs.caughtUpWithin(rev, ms); }

  private relist(): Promise<void> {
    if (!this.relisting) {
      this.relisting = this.doRelist().finally(() => { this.relisting = null; });
    }
    return this.relisting;
  }

  private async doRelist(): Promise<void> {
    const old = this.watcher;
    this.watcher = null;
    if (old) await cancelWithin(old, 2000);
    // One snapshot revision across the four prefixes, every page at it; events are not cached.
    const next = new State();
    let count = 0;
    const into = (kvs: IKeyValue[]) => { for (const kv of kvs) { apply(next, 'put', kv); count++; } };
    const { revision: rev } = await pagedRange(this.etcd, keys.poolPrefix, into);
    // The three prefixes fill separate maps, so they are read side by side.
    await Promise.all([keys.leasePrefix, keys.identityPrefix, keys.hostPrefix].map((p) => pagedRange(this.etcd, p, into, { revision: rev })));
    this.s = next;
    this.setRevision(BigInt(rev));
    this.log.info('view relisted', { revision: rev, keys: count });
    for (const l of this.listeners) l.reset?.();
    if (this.closed) return;
    const w = await this.etcd.watch().prefix(ROOT).startRevision(String(this.revision + 1n)).create();
    if (this.closed) { await cancelWithin(w, 2000); return; }
    this.watcher = w;
    w.on('put', (kv, _prev) => this.onEvent('put', kv));
    w.on('delete', (kv) => this.onEvent('delete', kv));
    w.on('end', () => { if (!this.closed && this.watcher === w) void this.relistSoon('watch ended'); });
    w.on('error', (e) => { if (!this.closed && this.watcher === w) void this.relistSoon(e.message); });
  }

  private async relistSoon(why: string): Promise<void> {
    this.log.warn('watch lost, relisting', { why });
    for (let delay = 100; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try { await this.relist(); return; } catch (e) {
        this.log.warn('relist failed', { error: (e as Error).message, retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private onEvent(type: 'put' | 'delete', kv: IKeyValue): void {
    const changed = apply(this.s, type, kv);
    if (changed) this.tell(changed);
    this.setRevision(BigInt(kv.mod_revision));
  }

  private tell(c: Change): void {
    for (const l of this.listeners) {
      if (c.type === 'lease') l.lease?.(c.pool, c.ip, c.lease);
      else l.event?.(c.key);
    }
  }

  private setRevision(rev: bigint): void {
    this.revs.seen(rev);
  }
}

type Change =
  | { type: 'lease'; pool: string; ip: string; lease: LeaseView | null }
  | { type: 'event'; key: { ip: string } | { identity: string } };

function mapOf<V>(m: Map<string, Map<string, V>>, pool: string): Map<string, V> {
  let inner = m.get(pool);
  if (!inner) { inner = new Map(); m.set(pool, inner); }
  return inner;
}

/** Adds (sign 1) or removes (sign -1) one lease's share of the counters. */
function count(s: State, l: LeaseView, sign: 1 | -1): void {
  let c = s.poolCounts.get(l.pool);
  if (!c) { c = { bound: 0, held: 0, pinned: 0 }; s.poolCounts.set(l.pool, c); }
  if (l.state === 'bound') c.bound += sign; else c.held += sign;
  if (l.pinned) c.pinned += sign;
  if (l.binding) {
    const n = (s.hostCounts.get(l.binding.host) ?? 0) + sign;
    if (n > 0) s.hostCounts.set(l.binding.host, n); else s.hostCounts.delete(l.binding.host);
  }
}

function apply(s: State, type: 'put' | 'delete', kv: IKeyValue): Change | null {
  const k = parseKey(kv.key.toString());
  const mod = String(kv.mod_revision);
  const json = () => JSON.parse(kv.value.toString());
  switch (k.type) {
    case 'pool':
      if (type === 'put') s.pools.set(k.pool, { value: json() as Pool, mod }); else s.pools.delete(k.pool);
      return null;
    case 'lease': {
      const leases = mapOf(s.leases, k.pool);
      const before = leases.get(k.ip);
      if (before) count(s, before, -1);
      if (type === 'put') {
        // A stored `revision` (older controllers wrote one) never overrides the real mod revision.
        const l = json() as LeaseView;
        l.revision = mod;
        leases.set(k.ip, l);
        count(s, l, 1);
        return { type: 'lease', pool: k.pool, ip: k.ip, lease: l };
      }
      leases.delete(k.ip);
      return { type: 'lease', pool: k.pool, ip: k.ip, lease: null };
    }
    case 'identity':
      if (type === 'put') mapOf(s.identities, k.pool).set(k.identity, { value: (json() as { ip: string }).ip, mod });
      else mapOf(s.identities, k.pool).delete(k.identity);
      return null;
    case 'host':
      if (type === 'put') s.hosts.set(k.host, { value: json() as Host, mod }); else s.hosts.delete(k.host);
      return null;
    case 'event':
      return type === 'put' ? { type: 'event', key: { ip: k.ip } } : null;
    case 'identity-event':
      return type === 'put' ? { type: 'event', key: { identity: k.identity } } : null;
    default:
      return null;
  }
}

/** etcd3's cancel() never settles on a watch etcd already cancelled (compaction); cap it. */
async function cancelWithin(w: Watcher, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    w.cancel().catch(() => undefined),
    new Promise<void>((r) => { timer = setTimeout(r, ms); }),
  ]);
  clearTimeout(timer);
}
