/**
 * The lease lifecycle as pure decisions (docs/architecture.md, "Lease rules").
 *
 *   free --bind--> bound --release(containerId)--> held --hold lapses--> free
 *                    ^                               |
 *                    +------------bind---------------+
 *
 * - The same identity always gets its address back, from any host.
 * - A bound lease changes container only when its binding was released, or
 *   when the binding's host has no record any more (declared dead or
 *   forgotten: controller/host-reaper.ts). An agent that is merely absent
 *   (alive key gone) keeps its leases. Anything else is LeaseHeldElsewhere,
 *   retryable, naming the holder.
 * - A release names its container id; a release from any other container is
 *   stale and changes nothing (fencing).
 * - Pinned leases never expire; only an operator frees them.
 *
 * The store turns each decision into one etcd transaction whose compares
 * re-check exactly the facts the decision relied on.
 */
import type { BindRequest } from '../common/api';
import { BerthError } from '../common/errors';
import type { Binding, IdentitySource, Lease, LeaseEvent, LeaseEventKind, Pool } from '../common/records';

export interface Decision {
  /** The lease to write, or null when nothing changes (or when `frees`). */
  next: Lease | null;
  /** True when the lease is freed at once: delete its lease and identity keys. */
  frees?: boolean;
  event: LeaseEvent | null;
  /** True when the decision relied on the current binding's host being gone. */
  reliesOnHostGone?: string;
}

export function event(kind: LeaseEventKind, before: Lease | null, after: Lease | null, at: string, actor?: string): LeaseEvent {
  const l = (after ?? before) as Lease;
  const b = after?.binding ?? before?.binding;
  const ev: LeaseEvent = {
    at, kind, pool: l.pool, ip: l.ip, identity: l.identity,
    oldState: before ? before.state : 'free',
    newState: after ? after.state : 'free',
  };
  if (b) { ev.host = b.host; ev.containerId = b.containerId; }
  if (actor) ev.actor = actor;
  return ev;
}

export function newLease(pool: string, ip: string, req: BindRequest, now: string): Decision {
  const lease: Lease = {
    pool, ip, identity: req.identity, state: 'bound', pinned: false,
    binding: bindingOf(req, now), source: sourceOf(req), createdAt: now, updatedAt: now,
  };
  return { next: lease, event: event('allocated', null, lease, now, req.host) };
}

/**
 * What the bind rule knows of a binding's host: 'alive' (alive key present),
 * 'absent' (record present, alive key gone: the agent is down or frozen, its
 * pods are presumed fine), 'gone' (no record: declared dead, forgotten, or
 * never registered).
 */
export type HostStatus = 'alive' | 'absent' | 'gone';

export function decideBind(cur: Lease, req: BindRequest, now: string, hostStatus: (host: string) => HostStatus): Decision {
  if (cur.state === 'bound' && cur.binding) {
    const b = cur.binding;
    if (b.containerId === req.containerId && b.host === req.host) {
      // One address per identity: a second interface of this container (net1 beside eth0, the
      // same network or another one on this pool) may not take it over. It used to, and the
      // first interface then lost its address on the second one's DEL.
      if (b.ifName !== req.ifName) {
        throw new BerthError(
          'InterfaceConflict',
          `${cur.identity} holds ${cur.ip} through interface ${b.ifName}${b.network ? ` (network ${b.network})` : ''} of container ${b.containerId}; `
          + `interface ${req.ifName}${req.network ? ` (network ${req.network})` : ''} cannot have it too: give that attachment its own BERTH_IDENTITY, or DEL ${b.ifName} first`,
        );
      }
      // The same attachment again. Record its network when the binding predates recording it.
      if (req.network === undefined || b.network === req.network) return { next: null, event: null };
      const next: Lease = { ...cur, binding: { ...b, network: req.network }, updatedAt: now };
      return { next, event: event('rebound', cur, next, now, req.host) };
    }
    const status = hostStatus(b.host);
    if (status !== 'gone') {
      const absent = status === 'absent'
        ? `; host ${b.host}'s agent is not responding, and the lease moves only once the host is declared dead (berthctl hosts forget ${b.host})`
        : '';
      throw new BerthError(
        'LeaseHeldElsewhere',
        `${cur.identity} holds ${cur.ip}, bound to container ${b.containerId} on host ${b.host} since ${b.boundAt}${absent}`,
      );
    }
    const next = rebind(cur, req, now);
    return { next, event: event('moved', cur, next, now, req.host), reliesOnHostGone: b.host };
  }
  const next = rebind(cur, req, now);
  const moved = cur.lastBinding !== undefined && cur.lastBinding.host !== req.host;
  return { next, event: event(moved ? 'moved' : 'bound', cur, next, now, req.host) };
}

function rebind(cur: Lease, req: BindRequest, now: string): Lease {
  const next: Lease = { ...cur, state: 'bound', binding: bindingOf(req, now), updatedAt: now };
  if (cur.binding) next.lastBinding = cur.binding;
  delete next.heldUntil;
  return next;
}

function bindingOf(req: BindRequest, now: string): Binding {
  return { host: req.host, containerId: req.containerId, ifName: req.ifName, ...(req.network !== undefined ? { network: req.network } : {}), boundAt: now };
}

/**
 * A release fenced by interface (ReleaseRequest.ifName) that names another
 * interface than the binding's: the address belongs to that other
 * attachment of the container, and the release must leave it alone.
 */
export function bindingOnOtherInterface(cur: Lease, fence: { containerId: string; ifName?: string }): boolean {
  return cur.state === 'bound' && cur.binding?.containerId === fence.containerId && fence.ifName !== undefined && cur.binding.ifName !== fence.ifName;
}

export type ReleaseOutcome = 'released' | 'already-held' | 'stale';

/**
 * The source of a lease's identity. Leases and bind requests from before the
 * field existed are read by the identity's form: `container/…` is a container
 * id, `k8s/…` a pod, `host/…` a runtime's name on one host, anything else an
 * explicit identity (held, as every identity was).
 */
export function sourceOf(l: { identity: string; source?: IdentitySource }): IdentitySource {
  if (l.source !== undefined) return l.source;
  if (l.identity.startsWith('container/')) return 'container';
  if (l.identity.startsWith('k8s/')) return 'k8s';
  if (l.identity.startsWith('host/')) return 'host';
  return 'explicit';
}

/**
 * How long a release holds this lease's address for its identity:
 * - a container id never comes back, so it is never held;
 * - an explicit identity is held for the pool's holdSeconds;
 * - a pod or host-scoped name is held too, unless the pool's holdPolicy is 'explicit-only'.
 * 0 means the release frees the address at once.
 */
export function holdSecondsFor(pool: Pick<Pool, 'holdSeconds' | 'holdPolicy'>, l: { identity: string; source?: IdentitySource }): number {
  const source = sourceOf(l);
  if (source === 'container') return 0;
  if (source !== 'explicit' && pool.holdPolicy === 'explicit-only') return 0;
  return pool.holdSeconds;
}

/**
 * A release by the bound container. It holds the address for `holdSeconds`
 * (pinned: forever), or frees it at once when the hold is 0, or when
 * `discard` (the ADD that bound it failed) and the lease was created by this
 * binding: never bound before, never released, not pinned. Any other
 * discard is an ordinary release: a held identity keeps its address.
 */
export function decideRelease(cur: Lease, containerId: string, holdSeconds: number, nowMs: number, discard = false): Decision & { outcome: ReleaseOutcome } {
  if (cur.state !== 'bound' || !cur.binding) return { next: null, event: null, outcome: 'already-held' };
  if (cur.binding.containerId !== containerId) return { next: null, event: null, outcome: 'stale' };
  const now = new Date(nowMs).toISOString();
  const next: Lease = { ...cur, state: 'held', lastBinding: cur.binding, updatedAt: now };
  delete next.binding;
  const createdByThisBinding = cur.lastBinding === undefined;
  if (!cur.pinned && (holdSeconds === 0 || (discard && createdByThisBinding))) {
    return { next: null, frees: true, event: event('released', cur, null, now, cur.binding.host), outcome: 'released' };
  }
  if (!cur.pinned) next.heldUntil = new Date(nowMs + holdSeconds * 1000).toISOString();
  return { next, event: event('released', cur, next, now, cur.binding.host), outcome: 'released' };
}

/**
 * Whether a pool may be deleted with these leases in it: never while one is
 * bound (a pod uses it) or pinned (an operator reserved it), unless forced.
 * Held, unpinned leases go with the pool.
 */
export function decidePoolDelete(leases: readonly Lease[], force: boolean): { blocking: Lease[] } {
  const blocking = leases.filter((l) => l.state === 'bound' || l.pinned);
  if (blocking.length > 0 && !force) {
    const bound = blocking.filter((l) => l.state === 'bound').length;
    const sample = blocking.slice(0, 3).map((l) => `${l.ip} (${l.identity}${l.pinned ? ', pinned' : ''})`).join(', ');
    throw new BerthError('PoolInUse', `${bound} bound, ${blocking.length - bound} pinned: ${sample}${blocking.length > 3 ? ', ...' : ''}; use --force to delete it anyway`);
  }
  return { blocking };
}

export function decidePin(cur: Lease | null, pool: string, identity: string, ip: string, now: string): Decision {
  if (cur && cur.identity !== identity) {
    throw new BerthError('AddressConflict', `${ip} is leased to ${cur.identity}`);
  }
  if (cur?.pinned) return { next: null, event: null };
  const next: Lease = cur
    ? { ...cur, pinned: true, updatedAt: now }
    : { pool, ip, identity, state: 'held', pinned: true, createdAt: now, updatedAt: now };
  delete next.heldUntil;
  return { next, event: event('pinned', cur, next, now, 'operator') };
}

/** Only a held, unpinned lease whose hold has lapsed may ever be expired. */
export function isExpired(l: Lease, nowMs: number): boolean {
  return l.state === 'held' && !l.pinned && l.heldUntil !== undefined && Date.parse(l.heldUntil) <= nowMs;
}

export function decideOperatorFree(cur: Lease, force: boolean, now: string): LeaseEvent {
  if (cur.state === 'bound' && !force) {
    const b = cur.binding as Binding;
    throw new BerthError('LeaseHeldElsewhere', `${cur.ip} is bound to container ${b.containerId} on ${b.host}; use --force to free it anyway`);
  }
  return event(cur.pinned ? 'unpinned' : 'freed', cur, null, now, 'operator');
}
