/**
 * Hosts as the controller sees and ends them: liveness for `hosts ls`, and
 * the one path that declares a host dead, shared by the host reaper (timed)
 * and `berthctl hosts forget` (explicit). Every write is a fenced etcd
 * transaction:
 *
 *   mark dead     compare record mod (and alive key absent, unless forced)
 *                 -> put record with `dead`
 *   orphan leases per batch: compare each lease's mod and the record's mod
 *                 -> put held lease + 'orphaned' event, for each
 *   delete record compare record mod -> delete
 *
 * An agent that comes back rewrites its record (agent/registration.ts), which
 * changes the record's mod revision and so stops the rest: leases not yet
 * orphaned stay bound to a host that is alive again.
 */
import type { Etcd3 } from 'etcd3';
import type { ForgetResponse, HostView } from '../common/api';
import { BerthError } from '../common/errors';
import { keys, NAME_RE } from '../common/keys';
import type { Logger } from '../common/log';
import { DEFAULT_HOLD_SECONDS, type Host, type Lease, type LeaseView, type Pool } from '../common/records';
import { orphanLease } from './host-death';
import { holdSecondsFor, type Decision } from './lease-rules';
import { commitIf, readKey, releaseOps, type Compare } from './txn';
import { VIEW_CATCH_UP_MS, type ClusterView, type Versioned } from './view';

const BATCH = 32;
/** Fresh-read attempts per lease once its batch failed. */
const ONE_BY_ONE_ATTEMPTS = 5;

export interface HostsDeps {
  etcd: Etcd3;
  view: ClusterView;
  log: Logger;
  now: () => number;
}

/** Names of hosts whose alive key exists (one keys-only range read). */
export async function aliveHosts(etcd: Etcd3): Promise<Set<string>> {
  const ks = await etcd.getAll().prefix(keys.alivePrefix).keys();
  return new Set(ks.map((k) => k.slice(keys.alivePrefix.length)));
}

export async function hostViews(d: HostsDeps): Promise<HostView[]> {
  const alive = await aliveHosts(d.etcd);
  // Bound-lease counts per host are maintained by the view on every change: no scan.
  return [...d.view.hosts.values()].map((h) => ({ ...h.value, leases: d.view.leasesOnHost(h.value.name), alive: alive.has(h.value.name) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Annotates an absent host's record with when it was first seen absent and when it will be declared dead. */
export async function markAbsent(d: HostsDeps, host: string, since: string, deadAt: string): Promise<boolean> {
  const rec = await readKey<Host>(d.etcd, keys.host(host));
  if (!rec.value || rec.value.dead) return false;
  const next: Host = { ...rec.value, absent: { since, deadAt } };
  const rev = await commitIf(d.etcd, [[keys.host(host), 'Mod', rec.mod], [keys.alive(host), 'Version', 0]],
    [d.etcd.put(keys.host(host)).value(JSON.stringify(next))]);
  return rev !== null;
}

/**
 * Declares a host dead and frees what it held. `force` (operator only) skips
 * the "alive key absent" requirement. Idempotent: a record already marked
 * dead is finished; a missing record is HostNotFound.
 */
export async function declareDead(d: HostsDeps, host: string, o: { by: 'reaper' | 'operator'; reason: string; force?: boolean }): Promise<ForgetResponse> {
  if (typeof host !== 'string' || !NAME_RE.test(host)) throw new BerthError('InvalidRequest', String(host), 'host must be a valid host name');
  for (let attempt = 0; attempt < 5; attempt++) {
    const [rec, alive] = await Promise.all([readKey<Host>(d.etcd, keys.host(host)), d.etcd.get(keys.alive(host)).exec()]);
    if (!rec.value) throw new BerthError('HostNotFound', host);
    const isAlive = alive.kvs.length > 0;
    if (isAlive && !o.force) {
      throw new BerthError('HostAlive', `${host}: its agent holds the alive key; stop it first, or pass --force to forget it anyway (the agent re-registers if it is running)`);
    }
    let markRev: string;
    let dead = rec.value.dead;
    if (dead) {
      markRev = rec.mod;
    } else {
      dead = { at: new Date(d.now()).toISOString(), by: o.by, reason: o.reason };
      const next: Host = { ...rec.value, dead };
      const compares: Compare[] = [[keys.host(host), 'Mod', rec.mod]];
      if (!o.force) compares.push([keys.alive(host), 'Version', 0]);
      const rev = await commitIf(d.etcd, compares, [d.etcd.put(keys.host(host)).value(JSON.stringify(next))]);
      if (rev === null) continue;
      markRev = String(rev);
      d.log.warn('host declared dead', { host, by: o.by, reason: o.reason });
    }
    return await finish(d, host, markRev, dead);
  }
  throw new BerthError('Contention', `host ${host} changed while declaring it dead; look again and retry`);
}

/** Turns every lease bound on the dead host held, then deletes its record. */
async function finish(d: HostsDeps, host: string, markRev: string, dead: NonNullable<Host['dead']>): Promise<ForgetResponse> {
  // Every bind that committed before the mark is in the view once it reaches the mark's revision.
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BerthError('StoreUnavailable', `the controller's view has not reached revision ${markRev}`, 'etcd watch lagging; the host is marked dead and will be finished, retry')), 10_000);
  });
  try { await Promise.race([d.view.caughtUp(BigInt(markRev)), late]); } finally { clearTimeout(timer); }
  const reason = dead.by === 'operator' ? `host ${host} forgotten by an operator` : `host ${host} declared dead: ${dead.reason}`;
  const bound: LeaseView[] = [];
  for (const leases of d.view.leases.values()) {
    for (const l of leases.values()) if (l.state === 'bound' && l.binding?.host === host) bound.push(l);
  }
  const out: ForgetResponse = { host, orphaned: 0, pinned: 0, freed: 0, interrupted: false };
  // A hold comes from the lease's pool settings, so each commit compares the
  // pool key as well (as a release does): a hold changed on another replica
  // after this view was read sends the lease to the fresh path below.
  const decide = (l: LeaseView, pool: Versioned<Pool> | undefined): Decision | null => orphanLease(l, host, holdOf(pool?.value, l), d.now(), dead.by, reason);
  const poolMod = (pool: Versioned<Pool> | undefined): string => pool?.mod ?? '0';
  const count = (l: Lease, dec: Decision) => {
    if (dec.frees) { out.freed = (out.freed ?? 0) + 1; return; }
    out.orphaned++;
    if (l.pinned) out.pinned++;
  };
  /**
   * One lease from fresh reads, until it is orphaned or no longer bound here.
   * 'interrupted' when the host came back, or the lease kept changing: the
   * record then stays, marked dead, and the next declaration finishes it.
   */
  const orphanOne = async (l: LeaseView): Promise<'done' | 'interrupted'> => {
    for (let attempt = 0; attempt < ONE_BY_ONE_ATTEMPTS; attempt++) {
      const [fresh, pool] = await Promise.all([readKey<Lease>(d.etcd, keys.lease(l.pool, l.ip)), readKey<Pool>(d.etcd, keys.pool(l.pool))]);
      if (!fresh.value) return 'done';
      const at = pool.value ? { value: pool.value, mod: pool.mod } : undefined;
      const dec = decide({ ...fresh.value, revision: fresh.mod }, at);
      if (!dec) return 'done';
      const rev = await commitIf(d.etcd, [[keys.host(host), 'Mod', markRev], [keys.lease(l.pool, l.ip), 'Mod', fresh.mod], [keys.pool(l.pool), 'Mod', poolMod(at)]],
        releaseOps(d.etcd, fresh.value, dec));
      if (rev !== null) { count(fresh.value, dec); return 'done'; }
      if ((await readKey<Host>(d.etcd, keys.host(host))).mod !== markRev) return 'interrupted';
    }
    return 'interrupted';
  };
  for (let i = 0; i < bound.length && !out.interrupted; i += BATCH) {
    const batch = bound.slice(i, i + BATCH).map((l) => ({ l, pool: d.view.pools.get(l.pool) })).map((x) => ({ ...x, dec: decide(x.l, x.pool) })).filter((x) => x.dec !== null);
    if (batch.length === 0) continue;
    const pools = new Map(batch.map(({ l, pool }) => [l.pool, poolMod(pool)]));
    const compares: Compare[] = [[keys.host(host), 'Mod', markRev], ...batch.map(({ l }): Compare => [keys.lease(l.pool, l.ip), 'Mod', l.revision]),
      ...[...pools].map(([name, mod]): Compare => [keys.pool(name), 'Mod', mod])];
    const ops = batch.flatMap(({ l, dec }) => releaseOps(d.etcd, l, dec!));
    if ((await commitIf(d.etcd, compares, ops)) !== null) { for (const { l, dec } of batch) count(l, dec!); continue; }
    // Something in the batch moved on (a release, a rebind, a pool's hold): one by one, from fresh reads.
    for (const { l } of batch) {
      if ((await orphanOne(l)) === 'interrupted') { out.interrupted = true; break; }
    }
  }
  if (!out.interrupted) {
    const rev = await commitIf(d.etcd, [[keys.host(host), 'Mod', markRev]], [d.etcd.delete().key(keys.host(host))]);
    out.interrupted = rev === null;
    // The answer's revision header then covers the delete: a read after it sees the host gone.
    if (rev !== null) await d.view.caughtUpWithin(rev, VIEW_CATCH_UP_MS);
  }
  if (out.interrupted) d.log.warn('host came back, or its leases kept changing, while being declared dead; the rest of its leases stay bound until the next declaration', { host, orphaned: out.orphaned });
  else d.log.warn('host record deleted; its bound leases are held', { host, orphaned: out.orphaned, pinned: out.pinned, by: dead.by });
  return out;
}

/** The hold a release of l would get: by the pool's hold and policy and l's identity source. */
function holdOf(pool: Pool | undefined, l: Lease): number {
  return pool ? holdSecondsFor(pool, l) : DEFAULT_HOLD_SECONDS;
}
