/**
 * What makes a pool sane, as pure functions (docs/architecture.md, "Pools").
 * The store runs them on a fresh read of the pools and hosts, then commits
 * the new pool in one transaction guarded by the pool-set key, so two
 * racing creates of overlapping pools cannot both win.
 *
 * - IPv4 only: the agent programs IPv4 routes and addresses (docs/dataplane.md).
 * - Never a network that cannot carry unicast pod addresses: "this network"
 *   0/8, loopback 127/8 (RFC 1122 3.2.1.3), link-local 169.254/16 (RFC 3927),
 *   multicast 224/4 (RFC 5771), reserved 240/4 and broadcast (RFC 1112).
 *   A pool that merely overlaps one is refused too, which also refuses /0.
 * - /30 at most: a /31 or /32 has no address left after the gateway (RFC 3021
 *   point-to-point links have no gateway to spare).
 * - Gateway and reserved addresses inside the pool and neither its network
 *   nor its broadcast address.
 * - No overlap with another pool: one address, one lease key, one identity.
 * - No registered host's underlay address inside the pool: a pod given it
 *   would steal the host's traffic.
 */
import type { CreatePool, UpdatePool } from '../common/api';
import { canonicalIp, contains, defaultGateway, isIp, offsetOf, overlaps, parseCidr, type Network } from '../common/cidr';
import { BerthError } from '../common/errors';
import { NAME_RE } from '../common/keys';
import { DEFAULT_HOLD_SECONDS, type HoldPolicy, type Host, type Pool } from '../common/records';

export const HOLD_POLICIES: readonly HoldPolicy[] = ['all', 'explicit-only'];

/** IPv4 ranges no pool may touch, with the reason an operator reads. */
export const FORBIDDEN_V4: readonly (readonly [string, string])[] = [
  ['0.0.0.0/8', '"this network" (RFC 1122)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved and broadcast'],
];
const FORBIDDEN = FORBIDDEN_V4.map(([cidr, why]) => ({ net: parseCidr(cidr), cidr, why }));

/** The longest prefix a pool may have: a /30 leases one address besides its gateway. */
export const MAX_POOL_PREFIX = 30;

function invalid(details: string, msg: string): never {
  throw new BerthError('InvalidRequest', details, msg);
}

/** Parses and checks a pool's network; throws InvalidRequest naming the rule. */
export function poolNetwork(cidr: unknown): Network {
  if (typeof cidr !== 'string' || cidr.trim() === '') invalid('cidr', 'cidr is required');
  const net = parseCidr(cidr);
  if (net.family !== 4) invalid(net.cidr, 'IPv6 pools are not supported yet (the agent is IPv4-only)');
  for (const f of FORBIDDEN) {
    if (overlaps(net, f.net)) invalid(net.cidr, `a pool cannot overlap ${f.cidr} (${f.why})`);
  }
  if (net.prefix > MAX_POOL_PREFIX) invalid(net.cidr, `prefix /${net.prefix} is too long: a pool needs at least a /${MAX_POOL_PREFIX} (network, gateway, one address, broadcast)`);
  return net;
}

/** Checks one gateway or reserved address against the pool's network. */
export function poolAddress(net: Network, ip: unknown, what: string): string {
  if (typeof ip !== 'string' || !isIp(ip)) invalid(String(ip), `${what} must be an IP address`);
  if (!contains(net, ip)) invalid(ip, `${what} is outside ${net.cidr}`);
  const off = offsetOf(net, ip);
  if (off === 0n) invalid(ip, `${what} is the network address of ${net.cidr}`);
  if (off === net.size - 1n) invalid(ip, `${what} is the broadcast address of ${net.cidr}`);
  return canonicalIp(ip);
}

export function holdSeconds(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) invalid(String(v), 'holdSeconds must be a non-negative integer');
  return v;
}

export function holdPolicy(v: unknown): HoldPolicy {
  if (!HOLD_POLICIES.includes(v as HoldPolicy)) invalid(String(v), `holdPolicy must be one of ${HOLD_POLICIES.join(', ')}`);
  return v as HoldPolicy;
}

/** A pool from a create request, checked on its own (overlaps are checkPoolFits'). */
export function poolFromRequest(req: CreatePool, now: string): Pool {
  if (typeof req !== 'object' || req === null) invalid('body', 'expected a JSON object');
  if (typeof req.name !== 'string' || !NAME_RE.test(req.name)) {
    invalid(String(req.name), 'pool name must be lowercase letters, digits, ".", "-" or "_"');
  }
  const net = poolNetwork(req.cidr);
  const gateway = req.gateway === undefined ? defaultGateway(net) : poolAddress(net, req.gateway, 'gateway');
  if (req.reserved !== undefined && !Array.isArray(req.reserved)) invalid('reserved', 'reserved must be a list of addresses');
  const reserved = (req.reserved ?? []).map((ip) => poolAddress(net, ip, 'reserved address'));
  const pool: Pool = {
    name: req.name, cidr: net.cidr, gateway, reserved,
    holdSeconds: req.holdSeconds === undefined ? DEFAULT_HOLD_SECONDS : holdSeconds(req.holdSeconds),
    createdAt: now,
  };
  if (req.holdPolicy !== undefined) pool.holdPolicy = holdPolicy(req.holdPolicy);
  return pool;
}

/** Refuses a pool that overlaps another pool or holds a host's underlay address. */
export function checkPoolFits(pool: Pool, others: readonly Pool[], hosts: readonly Host[]): void {
  const net = parseCidr(pool.cidr);
  for (const o of others) {
    if (o.name !== pool.name && overlaps(net, parseCidr(o.cidr))) {
      throw new BerthError('PoolOverlap', `${pool.cidr} overlaps pool ${o.name} (${o.cidr})`);
    }
  }
  for (const h of hosts) {
    if (typeof h.underlayIp === 'string' && contains(net, h.underlayIp)) {
      throw new BerthError('PoolOverlap', `${pool.cidr} contains the underlay address ${h.underlayIp} of host ${h.name}`);
    }
  }
}

/** A live pool's new settings; the network, gateway and reserved addresses never change. */
export function updatedPool(cur: Pool, req: UpdatePool): Pool {
  if (typeof req !== 'object' || req === null) invalid('body', 'expected a JSON object');
  const unknown = Object.keys(req).filter((k) => k !== 'holdSeconds' && k !== 'holdPolicy');
  if (unknown.length > 0) invalid(unknown.join(','), 'only holdSeconds and holdPolicy can change on a live pool');
  const next: Pool = { ...cur };
  if (req.holdSeconds !== undefined) next.holdSeconds = holdSeconds(req.holdSeconds);
  if (req.holdPolicy !== undefined) next.holdPolicy = holdPolicy(req.holdPolicy);
  return next;
}
