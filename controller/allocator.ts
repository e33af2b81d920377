/**
 * Pure address choice. Correctness against other replicas comes from the etcd
 * transaction that follows (the lease key must be absent); this module only
 * picks good candidates fast from the in-memory view, so it never scans etcd.
 *
 * Each replica starts its scan at its own random offset: two replicas racing
 * for the same pool then rarely propose the same address, which keeps
 * transaction conflicts (and retries) rare under concurrency.
 */
import { canonicalIp, contains, implicitReservedOffsets, offsetOf, addressAt, type Network } from '../common/cidr';
import { BerthError } from '../common/errors';

export interface PoolSpace {
  net: Network;
  /** Offsets never leased: network, broadcast, gateway, operator-reserved. */
  reserved: ReadonlySet<bigint>;
}

export function poolSpace(net: Network, gateway: string, reserved: readonly string[]): PoolSpace {
  const offsets = new Set<bigint>(implicitReservedOffsets(net));
  for (const ip of [gateway, ...reserved]) {
    if (!contains(net, ip)) throw new BerthError('InvalidRequest', ip, `reserved address is outside ${net.cidr}`);
    offsets.add(offsetOf(net, ip));
  }
  return { net, reserved: offsets };
}

/** Number of leasable addresses in the pool. */
export function capacity(space: PoolSpace): bigint {
  return space.net.size - BigInt(space.reserved.size);
}

/**
 * Chooses up to `count` distinct free offsets, scanning from `start` and
 * wrapping once. `taken` says whether an offset is leased or in flight; it is
 * a predicate so callers test only the candidates they reach (next-fit from a
 * moving cursor touches about one offset per allocation in a sparse pool).
 * Returns fewer than asked (possibly none) when the pool is that full.
 */
export function chooseFree(space: PoolSpace, taken: ReadonlySet<bigint> | ((offset: bigint) => boolean), count: number, start: bigint): bigint[] {
  const isTaken = typeof taken === 'function' ? taken : (o: bigint) => taken.has(o);
  const out: bigint[] = [];
  const size = space.net.size;
  const begin = ((start % size) + size) % size;
  for (let i = 0n; i < size && out.length < count; i++) {
    const off = (begin + i) % size;
    if (!space.reserved.has(off) && !isTaken(off)) out.push(off);
  }
  return out;
}

/** Validates an explicitly requested address (pin, CNI `ips` capability). */
export function checkRequested(space: PoolSpace, ip: string): { ip: string; offset: bigint } {
  if (!contains(space.net, ip)) throw new BerthError('InvalidRequest', ip, `address is outside pool ${space.net.cidr}`);
  const offset = offsetOf(space.net, ip);
  if (space.reserved.has(offset)) throw new BerthError('AddressConflict', ip, 'address is reserved in this pool');
  return { ip: canonicalIp(ip), offset };
}

export function ipAt(space: PoolSpace, offset: bigint): string {
  return addressAt(space.net, offset);
}
