/**
 * Thin helpers for the etcd transactions the store builds. Each write is one
 * transaction: compares that re-check the facts a decision relied on, then
 * the puts/deletes, then the history event, all or nothing.
 */
import { randomBytes } from 'node:crypto';
import type { ComparatorBuilder, Etcd3, IOperation } from 'etcd3';
import { keys } from '../common/keys';
import type { Lease, LeaseEvent } from '../common/records';

export type Compare = [key: string, target: 'Version' | 'Mod', value: string | number];

export function putLease(etcd: Etcd3, l: Lease): IOperation {
  return etcd.put(keys.lease(l.pool, l.ip)).value(JSON.stringify(l));
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

/** Commits `ops` if every compare holds; returns the txn revision, or null on conflict. */
export async function commitIf(etcd: Etcd3, compares: Compare[], ops: IOperation[]): Promise<bigint | null> {
  let b: ComparatorBuilder | null = null;
  for (const [key, target, value] of compares) {
    b = b ? b.and(key, target, '==', value) : etcd.if(key, target, '==', value);
  }
  const res = await (b ?? etcd.if(keys.poolPrefix, 'Version', '>', -1)).then(...ops).commit();
  return res.succeeded ? BigInt(res.header.revision) : null;
}

/** Reads one key with its mod revision; `mod` is '0' when absent. */
export async function readKey<T>(etcd: Etcd3, key: string): Promise<{ value: T | null; mod: string }> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  return kv ? { value: JSON.parse(kv.value.toString()) as T, mod: String(kv.mod_revision) } : { value: null, mod: '0' };
}
