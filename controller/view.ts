/**
 * An in-memory view of Berth's etcd state (pools, leases, identities, hosts),
 * fed by one prefix watch, so choosing a free address never scans etcd.
 *
 * The view is a hint, never the authority: every write is a transaction whose
 * compares re-check what the view said, and a failed compare falls back to a
 * fresh read. When the watch cannot resume (compaction, a lost stream), the
 * view relists the whole prefix at one revision and starts watching after it.
 */
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { keys, parseKey, ROOT } from '../common/keys';
import type { Logger } from '../common/log';
import type { Host, Lease, LeaseView, Pool } from '../common/records';

export interface Versioned<T> { value: T; mod: string }

export class ClusterView {
  readonly pools = new Map<string, Versioned<Pool>>();
  /** pool -> ip -> lease */
  readonly leases = new Map<string, Map<string, LeaseView>>();
  /** pool -> identity -> {ip, mod} */
  readonly identities = new Map<string, Map<string, Versioned<string>>>();
  readonly hosts = new Map<string, Versioned<Host>>();
  revision = 0n;
  private watcher: Watcher | null = null;
  private closed = false;
  private relisting: Promise<void> | null = null;
  private readonly waiters: { rev: bigint; resolve: () => void }[] = [];

  constructor(private readonly etcd: Etcd3, private readonly log: Logger) {}

  async start(): Promise<void> {
    await this.relist();
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.watcher;
    this.watcher = null;
    if (w) await cancelWithin(w, 2000);
  }

  leasesOf(pool: string): Map<string, LeaseView> {
    let m = this.leases.get(pool);
    if (!m) { m = new Map(); this.leases.set(pool, m); }
    return m;
  }

  identitiesOf(pool: string): Map<string, Versioned<string>> {
    let m = this.identities.get(pool);
    if (!m) { m = new Map(); this.identities.set(pool, m); }
    return m;
  }

  /** Listed and watching: false before the first list and while relisting (readiness, controller/app.ts). */
  get synced(): boolean { return this.watcher !== null && this.relisting === null; }

  /** Resolves once the view has seen revision `rev` (used after our own writes). */
  caughtUp(rev: bigint): Promise<void> {
    if (this.revision >= rev) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ rev, resolve }));
  }

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
    // One snapshot revision across the four prefixes; events are not cached.
    const first = await this.etcd.getAll().prefix(keys.poolPrefix).exec();
    const rev = first.header.revision;
    const rest = await Promise.all([keys.leasePrefix, keys.identityPrefix, keys.hostPrefix]
      .map((p) => this.etcd.getAll().prefix(p).revision(rev).exec()));
    this.pools.clear(); this.leases.clear(); this.identities.clear(); this.hosts.clear();
    let count = 0;
    for (const res of [first, ...rest]) for (const kv of res.kvs) { this.apply('put', kv); count++; }
    this.setRevision(BigInt(rev));
    this.log.info('view relisted', { revision: rev, keys: count });
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
    this.apply(type, kv);
    this.setRevision(BigInt(kv.mod_revision));
  }

  private setRevision(rev: bigint): void {
    if (rev > this.revision) this.revision = rev;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].rev <= this.revision) { this.waiters[i].resolve(); this.waiters.splice(i, 1); }
    }
  }

  private apply(type: 'put' | 'delete', kv: IKeyValue): void {
    const k = parseKey(kv.key.toString());
    const mod = String(kv.mod_revision);
    const json = () => JSON.parse(kv.value.toString());
    switch (k.type) {
      case 'pool':
        if (type === 'put') this.pools.set(k.pool, { value: json() as Pool, mod }); else this.pools.delete(k.pool);
        break;
      case 'lease':
        if (type === 'put') this.leasesOf(k.pool).set(k.ip, { ...(json() as Lease), revision: mod });
        else this.leasesOf(k.pool).delete(k.ip);
        break;
      case 'identity':
        if (type === 'put') this.identitiesOf(k.pool).set(k.identity, { value: (json() as { ip: string }).ip, mod });
        else this.identitiesOf(k.pool).delete(k.identity);
        break;
      case 'host':
        if (type === 'put') this.hosts.set(k.host, { value: json() as Host, mod }); else this.hosts.delete(k.host);
        break;
      default:
        break;
    }
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
