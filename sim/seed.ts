/**
 * Fills etcd with many leases fast, for scale tests and benches: the pool
 * record, then leases, identity keys and history events written directly in
 * large transactions (the controller's own records, rules and key schema, so
 * a controller started afterwards cannot tell them from its own), instead of
 * one API call per lease. Records only: no agent, no kernel state.
 */
import type { Etcd3, IOperation } from 'etcd3';
import { addressAt, defaultGateway, parseCidr } from '../common/cidr';
import { keys } from '../common/keys';
import type { Lease, Pool } from '../common/records';
import { decideRelease, newLease } from '../controller/lease-rules';
import { putEvent, putIdentity, putLease } from '../controller/txn';

export interface SeedOptions {
  pool: string;
  cidr: string;
  count: number;
  /** Leases are bound round-robin on these hosts. */
  hosts: string[];
  /** Every n-th lease is released (held for holdSeconds); 0: none. */
  heldEvery?: number;
  holdSeconds?: number;
  /** Operations per transaction: etcd's --max-txn-ops (default 128) bounds it. */
  opsPerTxn?: number;
  concurrency?: number;
  now?: number;
  /** Identity of lease i (default `seed/<pool>/<i>`). */
  identity?: (i: number) => string;
}

/** Writes the pool and `count` leases; returns how many. Transactions are built as they are sent. */
export async function seedLeases(etcd: Etcd3, o: SeedOptions): Promise<number> {
  const net = parseCidr(o.cidr);
  const nowMs = o.now ?? Date.now();
  const now = new Date(nowMs).toISOString();
  const pool: Pool = { name: o.pool, cidr: net.cidr, gateway: defaultGateway(net), reserved: [], holdSeconds: o.holdSeconds ?? 3600, createdAt: now };
  await etcd.put(keys.pool(pool.name)).value(JSON.stringify(pool));
  const opsOf = (i: number): IOperation[] => {
    // Offsets 0 (network) and 1 (the default gateway) are never leased.
    const ip = addressAt(net, BigInt(i + 2));
    const req = { identity: o.identity?.(i) ?? `seed/${o.pool}/${i}`, host: o.hosts[i % o.hosts.length], containerId: `seed-${o.pool}-${i}`, ifName: 'eth0' };
    const bound = newLease(pool.name, ip, req, now);
    let lease = bound.next as Lease;
    const ops = [putIdentity(etcd, pool.name, lease.identity, ip), putEvent(etcd, bound.event!)];
    if (o.heldEvery && i % o.heldEvery === 0) {
      const held = decideRelease(lease, req.containerId, pool.holdSeconds, nowMs);
      lease = held.next as Lease;
      ops.push(putEvent(etcd, held.event!));
    }
    ops.push(putLease(etcd, lease));
    return ops;
  };
  // At most 4 operations per lease, so a transaction never exceeds opsPerTxn.
  const perTxn = Math.max(1, Math.floor((o.opsPerTxn ?? 120) / 4));
  const batches = Math.ceil(o.count / perTxn);
  let next = 0;
  await Promise.all(Array.from({ length: o.concurrency ?? 8 }, async () => {
    for (let b = next++; b < batches; b = next++) {
      const ops: IOperation[] = [];
      for (let i = b * perTxn; i < Math.min(o.count, (b + 1) * perTxn); i++) ops.push(...opsOf(i));
      await etcd.if(keys.poolPrefix, 'Version', '>', -1).then(...ops).commit();
    }
  }));
  return o.count;
}
