/**
 * The etcd key schema, in one place (documented in docs/architecture.md).
 *
 *   /berth/v1/pools/<pool>                        Pool
 *   /berth/v1/pool-set                            guard: every pool create/delete rewrites it (overlap check)
 *   /berth/v1/leases/<pool>/<ip>                  Lease   (address-keyed: one key per address)
 *   /berth/v1/identities/<pool>/<identity>        {ip}    (identity index: same identity, same address)
 *   /berth/v1/hosts/<host>                        Host    (persistent: written by the agent, deleted only
 *                                                          when the host is declared dead or forgotten)
 *   /berth/v1/alive/<host>                        HostAlive (attached to the agent's etcd lease: liveness)
 *   /berth/v1/events/<ip>/<at>-<seq>              LeaseEvent (bounded by age and count)
 *   berth-v1-expirer                              leader key of the single expirer (controller/leadership.ts)
 *   berth-v1-host-reaper                          leader key of the single host reaper
 *   /berth/v1/identity-events/<identity>/<at>-<seq>  LeaseEvent (the same event, indexed by identity)
 *
 * Uniqueness of an address is the absence of its lease key, so every
 * allocation is a transaction comparing that key's version with 0.
 * Identities are URI-encoded so '/' in `k8s/ns/pod` stays one path segment.
 */

export const ROOT = '/berth/v1/';

export const keys = {
  poolPrefix: `${ROOT}pools/`,
  pool: (pool: string) => `${ROOT}pools/${pool}`,
  /** Outside poolPrefix on purpose: a range read of the pools never returns it. */
  poolSet: `${ROOT}pool-set`,
  leasePrefix: `${ROOT}leases/`,
  poolLeasePrefix: (pool: string) => `${ROOT}leases/${pool}/`,
  lease: (pool: string, ip: string) => `${ROOT}leases/${pool}/${ip}`,
  identityPrefix: `${ROOT}identities/`,
  identity: (pool: string, identity: string) => `${ROOT}identities/${pool}/${encodeURIComponent(identity)}`,
  hostPrefix: `${ROOT}hosts/`,
  host: (host: string) => `${ROOT}hosts/${host}`,
  alivePrefix: `${ROOT}alive/`,
  alive: (host: string) => `${ROOT}alive/${host}`,
  eventPrefix: `${ROOT}events/`,
  addressEventPrefix: (ip: string) => `${ROOT}events/${ip}/`,
  event: (ip: string, at: string, seq: string) => `${ROOT}events/${ip}/${at}-${seq}`,
  electionExpirer: 'berth-v1-expirer',
  electionHostReaper: 'berth-v1-host-reaper',
  // Identity index of history: a copy of each event under its identity, written in
  // the same transaction as the address-keyed one, so `history <identity>` reads
  // only that identity's events. Trimmed like the address history.
  identityEventPrefix: `${ROOT}identity-events/`,
  identityEvents: (identity: string) => `${ROOT}identity-events/${encodeURIComponent(identity)}/`,
  identityEvent: (identity: string, at: string, seq: string) => `${ROOT}identity-events/${encodeURIComponent(identity)}/${at}-${seq}`,
} as const;

export type ParsedKey =
  | { type: 'pool'; pool: string }
  | { type: 'lease'; pool: string; ip: string }
  | { type: 'identity'; pool: string; identity: string }
  | { type: 'host'; host: string }
  | { type: 'alive'; host: string }
  | { type: 'event'; ip: string }
  | { type: 'identity-event'; identity: string }
  | { type: 'other' };

export function parseKey(key: string): ParsedKey {
  if (!key.startsWith(ROOT)) return { type: 'other' };
  const parts = key.slice(ROOT.length).split('/');
  switch (parts[0]) {
    case 'pools':
      return parts.length === 2 ? { type: 'pool', pool: parts[1] } : { type: 'other' };
    case 'leases':
      return parts.length === 3 ? { type: 'lease', pool: parts[1], ip: parts[2] } : { type: 'other' };
    case 'identities':
      return parts.length === 3 ? { type: 'identity', pool: parts[1], identity: decodeURIComponent(parts[2]) } : { type: 'other' };
    case 'hosts':
      return parts.length === 2 ? { type: 'host', host: parts[1] } : { type: 'other' };
    case 'alive':
      return parts.length === 2 ? { type: 'alive', host: parts[1] } : { type: 'other' };
    case 'events':
      return parts.length === 3 ? { type: 'event', ip: parts[1] } : { type: 'other' };
    case 'identity-events':
      return parts.length === 3 ? { type: 'identity-event', identity: decodeURIComponent(parts[1]) } : { type: 'other' };
    default:
      return { type: 'other' };
  }
}

/** Names that become one etcd path segment (pools, hosts). */
export const NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
