/**
 * Thin helpers for the etcd transactions the store builds. Each write is one
 * transaction: compares that re-check the facts a decision relied on, then
 * the puts/deletes, then the history event, all or nothing.
 */
import { randomBytes } from 'node:crypto';
import { CompareResult, CompareTarget, type ComparatorBuilder, type Etcd3, type IOperation } from 'etcd3';
import { keys } from '../common/keys';
import type { Lease, LeaseEvent } from '../common/records';

/** A compare on one key; the comparison is '==' unless given. */
export type Compare = [key: string, target: 'Version' | 'Mod', value: string | number, cmp?: '==' | '>' | '<' | '!='];

/**
 * New leases are only created in the pool, as it was, that they were decided
 * from: its key still has the mod revision read. Fences a pool delete against
 * binds in flight, and a stale view against a pool deleted and created again.
 */
export const poolUnchanged = (pool: string, mod: string): Compare => [keys.pool(pool), 'Mod', mod];

/**
 * The stored form of a lease: the record only. A LeaseView's `revision` is
 * the key's mod revision, carried beside the value and never stored in it
 * (decisions spread the view they were given, so it is dropped here, at the
 * one place leases are written).
 */
export function leaseRecord(l: Lease): Lease {
  const { revision: _revision, ...rest } = l as Lease & { revision?: unknown };
  return rest;
}

export function putLease(etcd: Etcd3, l: Lease): IOperation {
  return etcd.put(keys.lease(l.pool, l.ip)).value(JSON.stringify(leaseRecord(l)));
}

export function putIdentity(etcd: Etcd3, pool: string, identity: string, ip: string): IOperation {
  return etcd.put(keys.identity(pool, identity)).value(JSON.stringify({ ip }));
}

/**
 * The event under its address and, for `history <identity>`, a copy under its
 * identity. One operation for the caller: the two puts travel as a nested
 * transaction (etcd >= 3.3) inside the caller's, all or nothing with it.
 */
export function putEvent(etcd: Etcd3, ev: LeaseEvent): IOperation {
  const seq = randomBytes(4).toString('hex');
  const value = JSON.stringify(ev);
  const byIp = etcd.put(keys.event(ev.ip, ev.at, seq)).value(value);
  const byIdentity = etcd.put(keys.identityEvent(ev.identity, ev.at, seq)).value(value);
  return { op: async () => ({ request_txn: { compare: [], success: [await byIp.op(), await byIdentity.op()], failure: [] } }) };
}

export function del(etcd: Etcd3, key: string): IOperation {
  return etcd.delete().key(key);
}

/**
 * The writes of a release-like decision on `cur` (a release, a host's death):
 * a held lease is written back; a freed one (hold 0) goes with its identity
 * key, as the expirer frees it. Either way with its history event.
 */
export function releaseOps(etcd: Etcd3, cur: Lease, d: { next: Lease | null; frees?: boolean; event: LeaseEvent | null }): IOperation[] {
  return d.frees
    ? [del(etcd, keys.lease(cur.pool, cur.ip)), del(etcd, keys.identity(cur.pool, cur.identity)), putEvent(etcd, d.event!)]
    : [putLease(etcd, d.next as Lease), putEvent(etcd, d.event!)];
}

/** Per etcd client, what sees every transaction's outcome and duration (controller/metrics.ts). */
export type TxnObserver = (seconds: number, outcome: 'committed' | 'conflict' | 'error', revision: bigint | null) => void;
export const txnObservers = new WeakMap<Etcd3, TxnObserver>();

async function observed(etcd: Etcd3, txn: () => Promise<{ succeeded: boolean; header: { revision: string } }>): Promise<bigint | null> {
  const watch = txnObservers.get(etcd);
  const t0 = performance.now();
  try {
    const res = await txn();
    const rev = res.succeeded ? BigInt(res.header.revision) : null;
    watch?.((performance.now() - t0) / 1000, rev === null ? 'conflict' : 'committed', rev);
    return rev;
  } catch (e) {
    watch?.((performance.now() - t0) / 1000, 'error', null);
    throw e;
  }
}

/** Commits `ops` if every compare holds; returns the txn revision, or null on conflict. */
export async function commitIf(etcd: Etcd3, compares: Compare[], ops: IOperation[]): Promise<bigint | null> {
  let b: ComparatorBuilder | null = null;
  for (const [key, target, value, cmp = '=='] of compares) {
    b = b ? b.and(key, target, cmp, value) : etcd.if(key, target, cmp, value);
  }
  return observed(etcd, () => (b ?? etcd.if(keys.poolPrefix, 'Version', '>', -1)).then(...ops).commit());
}

/** Reads one key with its mod revision; `mod` is '0' when absent. */
export async function readKey<T>(etcd: Etcd3, key: string): Promise<{ value: T | null; mod: string }> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  return kv ? { value: JSON.parse(kv.value.toString()) as T, mod: String(kv.mod_revision) } : { value: null, mod: '0' };
}

/**
 * Like commitIf, plus one range compare: no key under `prefix` was written
 * after revision `rev` (etcd compares every key in [prefix, prefixEnd)). The
 * client's builder cannot express a range, so this goes to the KV service.
 */
export async function commitIfRangeUnchanged(etcd: Etcd3, compares: Compare[], prefix: string, rev: bigint, ops: IOperation[]): Promise<bigint | null> {
  const key = Buffer.from(prefix);
  const cmpResult = { '==': CompareResult.Equal, '>': CompareResult.Greater, '<': CompareResult.Less, '!=': CompareResult.NotEqual } as const;
  return observed(etcd, async () => etcd.kv.txn({
    compare: [
      ...compares.map(([k, target, value, cmp = '==']) => ({
        key: Buffer.from(k), target: CompareTarget[target], result: cmpResult[cmp], [target === 'Mod' ? 'mod_revision' : 'version']: value,
      })),
      { key, range_end: prefixEnd(key), target: CompareTarget.Mod, result: CompareResult.Less, mod_revision: String(rev + 1n) },
    ],
    success: await Promise.all(ops.map((o) => o.op())),
    failure: [],
  }));
}

function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) { end[i]++; return end.subarray(0, i + 1); }
  }
  return Buffer.from([0]);
}
