/**
 * The lease store: pools and leases in etcd, one transaction per decision.
 *
 * Safety across replicas rests only on etcd compares: an address is taken iff
 * its lease key exists; an identity has an address iff its identity key
 * exists; both are created in the same transaction, guarded by "absent".
 * Rebinds and releases compare the mod revision they read. A failed compare
 * re-reads fresh state and retries with bounded backoff, then gives up with
 * Contention ("try again later"). No in-process lock guards anything.
 */
import type { Etcd3 } from 'etcd3';
import type {
  BindRequest, BindResponse, CreatePool, DeletePoolResponse, LeaseFilter, LeasePage, PinRequest, ReleaseRequest, ReleaseResponse, UpdatePool,
} from '../common/api';
import { canonicalIp, isIp, parseCidr } from '../common/cidr';
import { BerthError, castError } from '../common/errors';
import { pagedRange, pageSizeOf, rangeAll } from '../common/etcd-paged';
import { keys, NAME_RE } from '../common/keys';
import type { Logger } from '../common/log';
import type { Host, Lease, LeaseView, Pool, PoolUsage } from '../common/records';
import { capacity, checkRequested, poolSpace, type PoolSpace } from './allocator';
import { AllocationBatcher, type PoolAt } from './batcher';
import { Backoff } from './backoff';
import { NAME_RE as CNI_NAME_RE } from '../common/cni-config';
import { bindingOnOtherInterface, decideBind, decideOperatorFree, decidePin, decidePoolDelete, decideRelease, event, holdSecondsFor, newLease, type Decision, type HostStatus } from './lease-rules';
import { checkPoolFits, poolFromRequest, updatedPool } from './pool-rules';
import { commitIf, commitIfRangeUnchanged, del, poolUnchanged, putEvent, putIdentity, putLease, readKey, releaseOps, type Compare } from './txn';
import { VIEW_CATCH_UP_MS, type ClusterView, type Versioned } from './view';

/**
 * Pool creates and deletes all rewrite the pool-set guard, so N of them racing
 * take up to N rounds (each round one commits). They are rare: allow many.
 */
const POOL_SET_ATTEMPTS = 64;

export interface StoreOptions {
  maxAttempts?: number;
  batchMax?: number;
  now?: () => number;
}

interface Snapshot {
  ip: string | null;
  identityMod: string;
  lease: LeaseView | null;
}

export class LeaseStore {
  private readonly spaces = new Map<string, { mod: string; space: PoolSpace }>();
  private readonly batcher: AllocationBatcher;
  private readonly maxAttempts: number;
  readonly now: () => number;

  constructor(readonly etcd: Etcd3, readonly view: ClusterView, private readonly log: Logger, opts: StoreOptions = {}) {
    this.maxAttempts = opts.maxAttempts ?? 8;
    this.now = opts.now ?? Date.now;
    this.batcher = new AllocationBatcher(etcd, view, (name, seen) => this.poolAt(name, seen), { batchMax: opts.batchMax ?? 32 });
  }

  // ---- pools ----

  /**
   * Creates a pool that overlaps no other pool and contains no host's underlay
   * address (controller/pool-rules.ts). Overlap is a property of the whole set
   * of pools, so every create and delete rewrites one guard key, pool-set, and
   * commits only if its mod revision is still the one read before the pools
   * were: two racing creates serialise on it, and the loser re-reads and sees
   * the winner.
   */
  async createPool(req: CreatePool): Promise<PoolUsage> {
    const pool = poolFromRequest(req, new Date(this.now()).toISOString());
    const space = poolSpace(parseCidr(pool.cidr), pool.gateway, pool.reserved);
    if (capacity(space) <= 0n) throw new BerthError('InvalidRequest', pool.cidr, 'pool has no leasable address');
    const backoff = new Backoff();
    for (let attempt = 0; attempt < POOL_SET_ATTEMPTS; attempt++) {
      if (attempt > 0) await backoff.next();
      // The guard first: a pool created after this read changes the guard, so the commit fails.
      const guard = await readKey<unknown>(this.etcd, keys.poolSet);
      const [pools, hosts] = await Promise.all([
        this.etcd.getAll().prefix(keys.poolPrefix).exec(),
        this.etcd.getAll().prefix(keys.hostPrefix).exec(),
      ]);
      const parse = <T>(kvs: { value: Buffer }[]) => kvs.map((kv) => JSON.parse(kv.value.toString()) as T);
      const existing = parse<Pool>(pools.kvs);
      if (existing.some((p) => p.name === pool.name)) throw new BerthError('PoolExists', pool.name);
      checkPoolFits(pool, existing, parse<Host>(hosts.kvs));
      const rev = await commitIf(this.etcd, [[keys.pool(pool.name), 'Version', 0], [keys.poolSet, 'Mod', guard.mod]], [
        this.etcd.put(keys.pool(pool.name)).value(JSON.stringify(pool)),
        this.etcd.put(keys.poolSet).value(JSON.stringify({ changed: pool.name, at: pool.createdAt })),
      ]);
      if (rev === null) continue;
      await this.view.caughtUp(rev);
      return this.usage(pool);
    }
    throw new BerthError('Contention', `create pool ${pool.name}: ${POOL_SET_ATTEMPTS} conflicting attempts`);
  }

  /** Changes a live pool's hold; releases from now on use it, held leases keep their heldUntil. */
  async updatePool(name: string, req: UpdatePool): Promise<PoolUsage> {
    const backoff = new Backoff();
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (attempt > 0) await backoff.next();
      const cur = await readKey<Pool>(this.etcd, keys.pool(name));
      if (!cur.value) throw new BerthError('PoolNotFound', name);
      const next = updatedPool(cur.value, req);
      const rev = await commitIf(this.etcd, [[keys.pool(name), 'Mod', cur.mod]], [this.etcd.put(keys.pool(name)).value(JSON.stringify(next))]);
      if (rev === null) continue;
      await this.view.caughtUp(rev);
      return this.usage(next);
    }
    throw new BerthError('Contention', `update pool ${name}: ${this.maxAttempts} conflicting attempts`);
  }

  /**
   * Deletes a pool with its leases and identity index, in one transaction that
   * commits only if no lease of the pool changed since it was judged (a range
   * compare), so a bind that lands meanwhile makes it re-read and judge again.
   * New leases compare the pool key's mod revision (txn.poolUnchanged), so none is
   * created in a pool once it is gone. Refused while a lease is bound or
   * pinned, unless forced. History keeps the removed leases' past and gets a
   * `freed` event per lease, written right after the commit.
   */
  async deletePool(name: string, force: boolean): Promise<DeletePoolResponse> {
    // A name that cannot be a pool must never become a key prefix to delete.
    if (!NAME_RE.test(name)) throw new BerthError('PoolNotFound', name);
    const backoff = new Backoff();
    for (let attempt = 0; attempt < POOL_SET_ATTEMPTS; attempt++) {
      if (attempt > 0) await backoff.next();
      const guard = await readKey<unknown>(this.etcd, keys.poolSet);
      const pool = await readKey<Pool>(this.etcd, keys.pool(name));
      if (!pool.value) throw new BerthError('PoolNotFound', name);
      const res = await rangeAll(this.etcd, keys.poolLeasePrefix(name));
      const leases = res.kvs.map((kv) => JSON.parse(kv.value.toString()) as Lease);
      decidePoolDelete(leases, force);
      const now = new Date(this.now()).toISOString();
      const rev = await commitIfRangeUnchanged(this.etcd, [[keys.pool(name), 'Mod', pool.mod], [keys.poolSet, 'Mod', guard.mod]],
        keys.poolLeasePrefix(name), BigInt(res.revision), [
          del(this.etcd, keys.pool(name)),
          this.etcd.put(keys.poolSet).value(JSON.stringify({ changed: name, at: now })),
          this.etcd.delete().prefix(keys.poolLeasePrefix(name)),
          this.etcd.delete().prefix(keys.identityPrefix + name + '/'),
        ]);
      if (rev === null) continue;
      const events = leases.map((l) => event('freed', l, null, now, 'operator'));
      try {
        for (let i = 0; i < events.length; i += 100) {
          await commitIf(this.etcd, [], events.slice(i, i + 100).map((ev) => putEvent(this.etcd, ev)));
        }
      } catch (e) {
        // The pool is gone either way; only history misses some `freed` events.
        this.log.warn('pool deleted, but writing its freed events failed', { pool: name, error: castError(e).message });
      }
      await this.view.caughtUp(rev);
      this.spaces.delete(name);
      this.log.info('pool deleted', { pool: name, leases: leases.length, force });
      return { deleted: pool.value, removedLeases: leases.length };
    }
    throw new BerthError('Contention', `delete pool ${name}: ${POOL_SET_ATTEMPTS} conflicting attempts`);
  }

  async pool(name: string): Promise<Pool> {
    return (await this.versionedPool(name)).value;
  }

  /** The pool with its mod revision: from the view, else from etcd. */
  private async versionedPool(name: string): Promise<Versioned<Pool>> {
    return this.view.pools.get(name) ?? this.freshPool(name);
  }

  private async freshPool(name: string): Promise<Versioned<Pool>> {
    const fresh = await readKey<Pool>(this.etcd, keys.pool(name));
    if (!fresh.value) throw new BerthError('PoolNotFound', name);
    return { value: fresh.value, mod: fresh.mod };
  }

  /**
   * Waits (bounded) until the view shows everything etcd had committed when
   * asked: what a refusal decided from the view needs before it is final.
   */
  private async viewCaughtUpWithEtcd(): Promise<void> {
    const res = await this.etcd.get(keys.poolSet).exec();
    const rev = BigInt(res.header.revision);
    if (!(await this.view.caughtUpWithin(rev, VIEW_CATCH_UP_MS))) {
      throw new BerthError('StoreUnavailable', `the controller's view has not reached revision ${rev}`, 'etcd watch lagging; cannot confirm the refusal, retry');
    }
  }

  async poolUsage(name: string): Promise<PoolUsage> {
    return this.usage(await this.pool(name));
  }

  listPools(): PoolUsage[] {
    return [...this.view.pools.values()].map((p) => this.usage(p.value)).sort((a, b) => a.name.localeCompare(b.name));
  }

  private usage(pool: Pool): PoolUsage {
    // Counters the view maintains on every change: no scan of the pool's leases.
    const { bound, held, pinned } = this.view.countsOf(pool.name);
    const size = Number(capacity(this.spaceFor(pool)));
    return { ...pool, size, bound, held, pinned, free: size - bound - held };
  }

  private spaceFor(pool: Pool): PoolSpace {
    const key = `${pool.cidr} ${pool.gateway} ${pool.reserved.join(',')}`;
    const hit = this.spaces.get(pool.name);
    if (hit && hit.mod === key) return hit.space;
    const space = poolSpace(parseCidr(pool.cidr), pool.gateway, pool.reserved);
    this.spaces.set(pool.name, { mod: key, space });
    return space;
  }

  private async poolAt(name: string, seen: Versioned<Pool>): Promise<PoolAt> {
    const viewed = this.view.pools.get(name);
    const pool = viewed && BigInt(viewed.mod) > BigInt(seen.mod) ? viewed : seen;
    return { pool, space: this.spaceFor(pool.value) };
  }

  // ---- bind / release / pin / free ----

  async bind(poolName: string, req: BindRequest): Promise<BindResponse> {
    validateBind(req);
    let pool = await this.versionedPool(poolName);
    const backoff = new Backoff();
    let fresh = false;
    let confirmedExhausted = false;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      // The first retry after a view-based attempt re-reads at once; later ones back off.
      if (attempt > 0 && fresh) {
        this.log.debug('bind conflict, retrying', { pool: poolName, identity: req.identity, attempt });
        await backoff.next();
      }
      fresh = attempt > 0;
      // New leases commit only against the pool settings they were decided
      // with (its mod revision): a pool deleted and created again with
      // another prefix on another replica is never allocated from the old one.
      let snap: Snapshot;
      if (fresh) [pool, snap] = await Promise.all([this.freshPool(poolName), this.readSnapshot(poolName, req.identity)]);
      else snap = this.viewSnapshot(poolName, req.identity);
      const space = this.spaceFor(pool.value);
      const requested = req.ip !== undefined ? checkRequested(space, req.ip) : null;
      const nowMs = this.now();
      const now = new Date(nowMs).toISOString();
      if (snap.ip === null) {
        if (requested) {
          const other = fresh ? (await readKey<Lease>(this.etcd, keys.lease(poolName, requested.ip))).value : this.view.leasesOf(poolName).get(requested.ip);
          // The view may not have seen a free or a lapsed hold yet: refuse only on etcd's word.
          if (other && !fresh) continue;
          if (other) throw new BerthError('AddressConflict', `${requested.ip} is leased to ${other.identity}`);
          const d = newLease(poolName, requested.ip, req, now);
          const rev = await this.commitNew(d.next as Lease, d.event!, snap.identityMod, pool.mod);
          if (rev !== null) return this.bound(pool.value, d.next as Lease, rev, true);
          continue;
        }
        const outcome = await this.batcher.allocate(pool, req, now);
        if (outcome === 'exhausted') {
          // Free addresses are picked from the view: before refusing, let it
          // catch up with etcd once (a release, free or expiry acknowledged
          // by another replica a moment ago).
          if (confirmedExhausted) throw new BerthError('PoolExhausted', `${poolName} (${pool.value.cidr}) has no free address`);
          await this.viewCaughtUpWithEtcd();
          confirmedExhausted = true;
          fresh = false;
          continue;
        }
        if (outcome !== 'conflict') return this.bound(outcome.pool, outcome.lease, outcome.revision, true);
        continue;
      }
      if (requested && requested.ip !== snap.ip) {
        throw new BerthError('AddressConflict', `${req.identity} already holds ${snap.ip}, not ${requested.ip}`);
      }
      if (!snap.lease) {
        // Identity index without its lease cannot be produced by our transactions; heal it.
        const d = newLease(poolName, snap.ip, req, now);
        const rev = await this.commitNew(d.next as Lease, d.event!, snap.identityMod, pool.mod);
        if (rev !== null) return this.bound(pool.value, d.next as Lease, rev, true);
        continue;
      }
      const holder = snap.lease.binding;
      const movingAway = snap.lease.state === 'bound' && holder !== undefined && holder.containerId !== req.containerId;
      // The view may not have seen a release yet: never refuse a bind on its word alone.
      if (movingAway && !fresh) continue;
      // Nor refuse another interface of the same container (InterfaceConflict) on its word.
      if (!fresh && snap.lease.state === 'bound' && holder?.containerId === req.containerId && holder.ifName !== req.ifName) continue;
      const status: HostStatus = movingAway ? await this.hostStatus(holder.host) : 'alive';
      const decision = decideBind(snap.lease, req, now, () => status);
      // "Already bound to you" is an answer the view may give after etcd moved on (a release
      // this replica made a moment ago, not yet seen): confirm it with a fresh read.
      if (!decision.next && !fresh) continue;
      if (!decision.next) return this.bound(pool.value, snap.lease, BigInt(snap.lease.revision), false);
      const compares: Compare[] = [
        [keys.lease(poolName, snap.lease.ip), 'Mod', snap.lease.revision],
        [keys.identity(poolName, req.identity), 'Mod', snap.identityMod],
      ];
      if (decision.reliesOnHostGone) compares.push([keys.host(decision.reliesOnHostGone), 'Version', 0]);
      const rev = await commitIf(this.etcd, compares, [putLease(this.etcd, decision.next), putEvent(this.etcd, decision.event!)]);
      if (rev !== null) return this.bound(pool.value, decision.next, rev, false);
    }
    throw new BerthError('Contention', `bind ${req.identity} in ${poolName}: ${this.maxAttempts} conflicting attempts`);
  }

  /** A binding's host as the bind rule sees it: only a missing record ('gone') lets its leases move. */
  private async hostStatus(host: string): Promise<HostStatus> {
    const [record, alive] = await Promise.all([readKey(this.etcd, keys.host(host)), this.etcd.get(keys.alive(host)).exec()]);
    if (record.value === null) return 'gone';
    return alive.kvs.length > 0 ? 'alive' : 'absent';
  }

  private commitNew(lease: Lease, ev: NonNullable<ReturnType<typeof newLease>['event']>, identityMod: string, poolMod: string): Promise<bigint | null> {
    return commitIf(this.etcd,
      [[keys.identity(lease.pool, lease.identity), 'Mod', identityMod], [keys.lease(lease.pool, lease.ip), 'Version', 0], poolUnchanged(lease.pool, poolMod)],
      [putLease(this.etcd, lease), putIdentity(this.etcd, lease.pool, lease.identity, lease.ip), putEvent(this.etcd, ev)]);
  }

  private bound(pool: Pool, lease: Lease, rev: bigint, allocated: boolean): BindResponse {
    return { lease: { ...lease, revision: String(rev) }, allocated, gateway: pool.gateway, prefix: parseCidr(pool.cidr).prefix };
  }

  async release(poolName: string, req: ReleaseRequest): Promise<ReleaseResponse> {
    if (typeof req?.containerId !== 'string' || req.containerId === '') throw new BerthError('InvalidRequest', 'containerId', 'containerId is required to release');
    if (req.ifName !== undefined && typeof req.ifName !== 'string') throw new BerthError('InvalidRequest', 'ifName', 'ifName must be a string');
    if (req.discard !== undefined && typeof req.discard !== 'boolean') throw new BerthError('InvalidRequest', String(req.discard), 'discard must be true or false');
    // The hold comes from the pool's settings, so the commit compares the
    // pool key too: a release that commits after a hold change (made on any
    // replica) was decided with the new hold, never with a stale view's.
    let pool = await this.versionedPool(poolName);
    const decide = (l: Lease) => decideRelease(l, req.containerId, holdSecondsFor(pool.value, l), this.now(), req.discard === true);
    // First from the watch-fed view, as bind does: the commit compares the
    // lease's mod revision, so a stale view costs one more round, never a
    // wrong release. Its negative answers (no lease, not this container's)
    // are never final: those come from etcd below.
    const cached = this.viewLease(poolName, req);
    if (cached && !bindingOnOtherInterface(cached, req)) {
      const d = decide(cached);
      if (d.next || d.frees) {
        const rev = await this.commitRelease(cached, d, pool.mod);
        if (rev !== null) return this.released(cached, d, rev);
      }
    }
    const backoff = new Backoff();
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (attempt > 0) await backoff.next();
      const [fresh, lease] = await Promise.all([readKey<Pool>(this.etcd, keys.pool(poolName)), this.readLease(poolName, req)]);
      // A deleted pool took its leases with it.
      if (!fresh.value || !lease) return { outcome: 'not-found' };
      pool = { value: fresh.value, mod: fresh.mod };
      if (bindingOnOtherInterface(lease, req)) return { outcome: 'stale', lease };
      const d = decide(lease);
      if (!d.next && !d.frees) return { outcome: d.outcome, lease };
      const rev = await this.commitRelease(lease, d, pool.mod);
      if (rev !== null) return this.released(lease, d, rev);
    }
    throw new BerthError('Contention', `release in ${poolName}: ${this.maxAttempts} conflicting attempts`);
  }

  /** A held lease is written back; a freed one goes with its identity key, as the expirer frees it. */
  private commitRelease(cur: LeaseView, d: Decision, poolMod: string): Promise<bigint | null> {
    return commitIf(this.etcd, [[keys.lease(cur.pool, cur.ip), 'Mod', cur.revision], [keys.pool(cur.pool), 'Mod', poolMod]], releaseOps(this.etcd, cur, d));
  }

  /** What a release answers: the held lease, or for a freed one the lease as it was released (no binding, no hold). */
  private released(cur: LeaseView, d: Decision, rev: bigint): ReleaseResponse {
    if (d.next) return { outcome: 'released', lease: { ...d.next, revision: String(rev) } };
    const gone: LeaseView = { ...cur, state: 'held', lastBinding: cur.binding, revision: String(rev) };
    delete gone.binding;
    delete gone.heldUntil;
    return { outcome: 'released', freed: true, lease: gone };
  }

  async pin(poolName: string, req: PinRequest): Promise<LeaseView> {
    if (typeof req?.identity !== 'string' || req.identity === '') throw new BerthError('InvalidRequest', 'identity', 'identity is required');
    let pool = await this.versionedPool(poolName);
    const backoff = new Backoff();
    let confirmedExhausted = false;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (attempt > 0) {
        await backoff.next();
        pool = await this.freshPool(poolName);
      }
      const space = this.spaceFor(pool.value);
      const requested = req.ip !== undefined ? checkRequested(space, String(req.ip)) : null;
      const snap = await this.readSnapshot(poolName, req.identity);
      const now = new Date(this.now()).toISOString();
      let ip = snap.ip;
      if (ip !== null && requested && requested.ip !== ip) throw new BerthError('AddressConflict', `${req.identity} already holds ${ip}, not ${requested.ip}`);
      if (ip === null) {
        if (requested) ip = requested.ip;
        else {
          const picked = this.batcher.pickOne(poolName, space);
          if (picked === null) {
            // Picked from the view, as bind's: refuse only once it has caught up with etcd.
            if (confirmedExhausted) throw new BerthError('PoolExhausted', `${poolName} (${pool.value.cidr}) has no free address`);
            await this.viewCaughtUpWithEtcd();
            confirmedExhausted = true;
            continue;
          }
          ip = picked;
        }
      }
      const cur = snap.lease ?? (await readKey<Lease>(this.etcd, keys.lease(poolName, ip))).value;
      const curMod = snap.lease ? snap.lease.revision : cur ? null : '0';
      if (cur && !snap.lease) {
        // An address the view thought free is taken: pick another.
        if (!requested) continue;
        throw new BerthError('AddressConflict', `${ip} is leased to ${cur.identity}`);
      }
      const d = decidePin(cur, poolName, req.identity, ip, now);
      if (!d.next) return snap.lease as LeaseView;
      const rev = await commitIf(this.etcd,
        [[keys.identity(poolName, req.identity), 'Mod', snap.identityMod], [keys.lease(poolName, ip), 'Mod', curMod ?? '0'], poolUnchanged(poolName, pool.mod)],
        [putLease(this.etcd, d.next), putIdentity(this.etcd, poolName, req.identity, ip), putEvent(this.etcd, d.event!)]);
      if (rev !== null) return { ...d.next, revision: String(rev) };
    }
    throw new BerthError('Contention', `pin ${req.identity} in ${poolName}: ${this.maxAttempts} conflicting attempts`);
  }

  /** Operator release: frees the address now, pinned or not (bound ones only with force). */
  async free(poolName: string, ip: string, force: boolean): Promise<LeaseView> {
    await this.pool(poolName);
    if (!isIp(ip)) throw new BerthError('InvalidRequest', ip, 'not an IP address');
    const lease = await this.readLease(poolName, { ip: canonicalIp(ip) });
    if (!lease) throw new BerthError('LeaseNotFound', `${ip} in pool ${poolName}`);
    const ev = decideOperatorFree(lease, force, new Date(this.now()).toISOString());
    const identityKey = keys.identity(poolName, lease.identity);
    const rev = await commitIf(this.etcd, [[keys.lease(poolName, lease.ip), 'Mod', lease.revision]],
      [del(this.etcd, keys.lease(poolName, lease.ip)), del(this.etcd, identityKey), putEvent(this.etcd, ev)]);
    if (rev === null) throw new BerthError('Contention', `${ip} changed while freeing it; look again and retry`);
    // The answer's revision header then covers the free: a read after it sees the address free.
    await this.view.caughtUpWithin(rev, VIEW_CATCH_UP_MS);
    return lease;
  }

  // ---- reads ----

  private viewSnapshot(pool: string, identity: string): Snapshot {
    const id = this.view.identitiesOf(pool).get(identity);
    if (!id) return { ip: null, identityMod: '0', lease: null };
    return { ip: id.value, identityMod: id.mod, lease: this.view.leasesOf(pool).get(id.value) ?? null };
  }

  private async readSnapshot(pool: string, identity: string): Promise<Snapshot> {
    const id = await readKey<{ ip: string }>(this.etcd, keys.identity(pool, identity));
    if (!id.value) return { ip: null, identityMod: id.mod, lease: null };
    const l = await readKey<Lease>(this.etcd, keys.lease(pool, id.value.ip));
    return { ip: id.value.ip, identityMod: id.mod, lease: l.value ? { ...l.value, revision: l.mod } : null };
  }

  /** The view's lease for a release request, or null; validation is readLease's. */
  private viewLease(pool: string, by: { identity?: string; ip?: string }): LeaseView | null {
    if (typeof by.ip === 'string' && isIp(by.ip)) return this.view.leasesOf(pool).get(canonicalIp(by.ip)) ?? null;
    if (by.ip === undefined && typeof by.identity === 'string' && by.identity !== '') return this.viewSnapshot(pool, by.identity).lease;
    return null;
  }

  private async readLease(pool: string, by: { identity?: string; ip?: string }): Promise<LeaseView | null> {
    if (by.ip !== undefined) {
      if (!isIp(String(by.ip))) throw new BerthError('InvalidRequest', String(by.ip), 'not an IP address');
      const l = await readKey<Lease>(this.etcd, keys.lease(pool, canonicalIp(String(by.ip))));
      return l.value ? { ...l.value, revision: l.mod } : null;
    }
    if (typeof by.identity !== 'string' || by.identity === '') throw new BerthError('InvalidRequest', 'identity', 'name the lease by identity or ip');
    return (await this.readSnapshot(pool, by.identity)).lease;
  }

  /**
   * One page of leases, read from etcd (paged, every page at the revision of
   * the first, so a listing is one snapshot). An identity filter reads the
   * identity index: a point read per pool. Host and state filters have no
   * index in etcd: a page scans at most SCAN_BUDGET keys and may come back
   * short, with a token to go on.
   */
  async listLeases(f: LeaseFilter): Promise<LeasePage> {
    const r = await this.leaseRows(f);
    const leases = r.rows.map((row) => (typeof row === 'string' ? JSON.parse(row) as LeaseView : row));
    return r.continue === undefined ? { leases } : { leases, continue: r.continue };
  }

  /**
   * The same page as JSON text, for the API. An unfiltered page passes etcd's
   * values through with the revision appended, never parsing them: at 100k
   * leases parsing and re-serialising was most of the controller's work.
   */
  async listLeasesJson(f: LeaseFilter): Promise<string> {
    const r = await this.leaseRows(f);
    const rows = r.rows.map((row) => (typeof row === 'string' ? row : JSON.stringify(row))).join(',');
    return `{"leases":[${rows}]${r.continue === undefined ? '' : `,"continue":${JSON.stringify(r.continue)}`}}`;
  }

  private async leaseRows(f: LeaseFilter): Promise<{ rows: (string | LeaseView)[]; continue?: string }> {
    if (f.pool !== undefined) await this.pool(f.pool);
    if (f.state !== undefined && !['bound', 'held', 'pinned'].includes(f.state)) {
      throw new BerthError('InvalidRequest', String(f.state), 'state must be bound, held or pinned');
    }
    const limit = f.limit ?? DEFAULT_PAGE;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new BerthError('InvalidRequest', String(f.limit), `limit must be an integer from 1 to ${MAX_PAGE}`);
    const keep = (l: LeaseView) => (f.host === undefined || l.binding?.host === f.host)
      && (f.identity === undefined || l.identity === f.identity)
      && (f.state === 'pinned' ? l.pinned : f.state === undefined || l.state === f.state);
    if (f.identity !== undefined) {
      const pools = f.pool !== undefined ? [f.pool] : [...this.view.pools.keys()].sort();
      const found = await Promise.all(pools.map((p) => this.readSnapshot(p, f.identity as string)));
      return { rows: found.map((snap) => snap.lease).filter((l): l is LeaseView => l !== null && keep(l)) };
    }
    const filtered = f.host !== undefined || f.state !== undefined;
    const cont = f.continue !== undefined ? decodeToken(f.continue) : undefined;
    const prefix = f.pool ? keys.poolLeasePrefix(f.pool) : keys.leasePrefix;
    if (cont && !cont.k.startsWith(prefix)) throw new BerthError('InvalidRequest', 'continue', 'continue token does not belong to this listing');
    const rows: (string | LeaseView)[] = [];
    const budget = Math.max(SCAN_BUDGET, limit);
    let lastSeen: string | null = null;
    let r;
    try {
      r = await pagedRange(this.etcd, prefix, (kvs) => {
        for (const kv of kvs) {
          lastSeen = kv.key.toString();
          const text = filtered ? null : withRevision(kv.value.toString(), String(kv.mod_revision));
          if (text !== null) rows.push(text);
          else {
            const l: LeaseView = { ...(JSON.parse(kv.value.toString()) as Lease), revision: String(kv.mod_revision) };
            if (keep(l)) rows.push(l);
          }
          if (rows.length >= limit) return false;
        }
        return true;
      }, { revision: cont?.r, after: cont?.k, max: budget, pageSize: Math.min(limit, pageSizeOf(this.etcd)) });
    } catch (e) {
      if (/compacted/.test((e as Error).message ?? '')) throw new BerthError('ContinueExpired', 'the revision this listing was read at is compacted');
      throw e;
    }
    // The read stopped early (page full, or scan budget spent): the next page starts after the last key looked at.
    const stoppedAt: string | null = r.lastKey === null ? null : lastSeen;
    return stoppedAt === null ? { rows } : { rows, continue: encodeToken({ r: r.revision, k: stoppedAt }) };
  }

  async findLease(ip: string, pool?: string): Promise<LeaseView> {
    if (!isIp(ip)) throw new BerthError('InvalidRequest', ip, 'not an IP address');
    const canon = canonicalIp(ip);
    const pools = pool !== undefined ? [pool] : [...this.view.pools.keys()];
    if (pool !== undefined) await this.pool(pool);
    for (const p of pools) {
      const l = await this.readLease(p, { ip: canon });
      if (l) return l;
    }
    throw new BerthError('LeaseNotFound', canon);
  }
}

const DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;
/** Keys a filtered listing looks at per page before it answers short with a token. */
const SCAN_BUDGET = 20_000;

interface ListToken { r: string; k: string }

/**
 * A stored lease's JSON with its fencing revision appended, without parsing
 * it; null when that would not be plain JSON of a LeaseView (an empty object,
 * or a stale stored `revision` an older controller wrote), so the caller parses.
 */
function withRevision(text: string, mod: string): string | null {
  if (!text.startsWith('{') || !text.endsWith('}') || text === '{}' || text.includes('"revision"')) return null;
  return `${text.slice(0, -1)},"revision":"${mod}"}`;
}

function encodeToken(t: ListToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeToken(text: string): ListToken {
  try {
    const t = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as ListToken;
    if (typeof t?.r === 'string' && /^\d+$/.test(t.r) && typeof t.k === 'string') return t;
  } catch { /* reported below */ }
  throw new BerthError('InvalidRequest', 'continue', 'continue token is not one this API issued');
}

function validateBind(req: BindRequest): void {
  const str = (v: unknown, name: string, max: number) => {
    if (typeof v !== 'string' || v === '' || v.length > max) throw new BerthError('InvalidRequest', name, `${name} must be a non-empty string of at most ${max} characters`);
  };
  if (typeof req !== 'object' || req === null) throw new BerthError('InvalidRequest', 'body', 'expected a JSON object');
  str(req.identity, 'identity', 512);
  str(req.containerId, 'containerId', 256);
  str(req.ifName, 'ifName', 15);
  if (typeof req.host !== 'string' || !NAME_RE.test(req.host)) throw new BerthError('InvalidRequest', String(req.host), 'host must be a valid host name');
  if (req.ip !== undefined && (typeof req.ip !== 'string' || !isIp(req.ip))) throw new BerthError('InvalidRequest', String(req.ip), 'ip must be an IP address');
  if (req.network !== undefined && (typeof req.network !== 'string' || req.network.length > 256 || !CNI_NAME_RE.test(req.network))) {
    throw new BerthError('InvalidRequest', String(req.network), 'network must be a CNI network name');
  }
  if (req.source !== undefined && !IDENTITY_SOURCES.includes(req.source)) {
    throw new BerthError('InvalidRequest', String(req.source), `source must be one of ${IDENTITY_SOURCES.join(', ')}`);
  }
}

const IDENTITY_SOURCES: readonly string[] = ['explicit', 'k8s', 'host', 'container'];
