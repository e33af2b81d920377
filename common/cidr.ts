/**
 * Pure address math on top of `ip-address`. Addresses are carried as bigint
 * offsets inside a network so the allocator never formats strings in its loop.
 */
import { Address4, Address6 } from 'ip-address';
import { BerthError } from './errors';

export type Family = 4 | 6;

export interface Network {
  family: Family;
  /** Canonical CIDR, host bits cleared. */
  cidr: string;
  prefix: number;
  /** First address of the network (the network address itself). */
  base: bigint;
  /** Number of addresses in the network, network and broadcast included. */
  size: bigint;
}

type Addr = Address4 | Address6;

function parseAddr(text: string): Addr {
  if (Address4.isValid(text) && !text.includes('/')) return new Address4(text);
  if (Address6.isValid(text) && !text.includes('/')) return new Address6(text);
  throw new BerthError('InvalidRequest', text, 'not an IP address');
}

export function isIp(text: string): boolean {
  return (Address4.isValid(text) || Address6.isValid(text)) && !text.includes('/');
}

export function familyOf(ip: string): Family {
  return parseAddr(ip) instanceof Address4 ? 4 : 6;
}

/** Canonical text form: dotted quad, or RFC 5952 compressed IPv6. */
export function canonicalIp(ip: string): string {
  const a = parseAddr(ip);
  return a instanceof Address4 ? a.correctForm() : a.correctForm();
}

export function parseCidr(text: string): Network {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) throw new BerthError('InvalidRequest', text, 'not a CIDR (expected address/prefix)');
  const addr = parseAddr(m[1]);
  const family: Family = addr instanceof Address4 ? 4 : 6;
  const bits = family === 4 ? 32 : 128;
  const prefix = Number(m[2]);
  if (prefix > bits) throw new BerthError('InvalidRequest', text, 'prefix length out of range');
  const size = 1n << BigInt(bits - prefix);
  const base = (addr.bigInt() / size) * size;
  return { family, prefix, base, size, cidr: `${fromBigInt(family, base)}/${prefix}` };
}

export function toBigInt(ip: string): bigint {
  return parseAddr(ip).bigInt();
}

export function fromBigInt(family: Family, n: bigint): string {
  return family === 4 ? Address4.fromBigInt(n).correctForm() : Address6.fromBigInt(n).correctForm();
}

export function contains(net: Network, ip: string): boolean {
  if (!isIp(ip) || familyOf(ip) !== net.family) return false;
  const n = toBigInt(ip);
  return n >= net.base && n < net.base + net.size;
}

export function addressAt(net: Network, offset: bigint): string {
  return fromBigInt(net.family, net.base + offset);
}

export function offsetOf(net: Network, ip: string): bigint {
  return toBigInt(ip) - net.base;
}

/**
 * Offsets never handed out: the network address, the IPv4 broadcast address
 * (IPv6 has none, but its subnet-router anycast address is offset 0 too).
 * /31 and /32 (and /127, /128) keep every address, as RFC 3021 allows.
 */
export function implicitReservedOffsets(net: Network): bigint[] {
  const bits = net.family === 4 ? 32 : 128;
  if (bits - net.prefix <= 1) return [];
  return net.family === 4 ? [0n, net.size - 1n] : [0n];
}

/** The conventional gateway: first usable address. */
export function defaultGateway(net: Network): string {
  return addressAt(net, net.size > 2n ? 1n : 0n);
}

/** True when the two networks share at least one address (same family only). */
export function overlaps(a: Network, b: Network): boolean {
  return a.family === b.family && a.base < b.base + b.size && b.base < a.base + a.size;
}
