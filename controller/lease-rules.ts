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
import type { Binding, Lease, LeaseEvent, LeaseEventKind } from '../common/records';

export interface Decision {
  /** The lease to write, or null when nothing changes. */
  next: Lease | null;
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
    binding: bindingOf(req, now), createdAt: now, updatedAt: now,
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
      if (b.ifName === req.ifName) return { next: null, event: null };
      const next: Lease = { ...cur, binding: { ...b, ifName: req.ifName }, updatedAt: now };
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
  return { host: req.host, containerId: req.containerId, ifName: req.ifName, boundAt: now };
}

export type ReleaseOutcome = 'released' | 'already-held' | 'stale';

export function decideRelease(cur: Lease, containerId: string, holdSeconds: number, nowMs: number): Decision & { outcome: ReleaseOutcome } {
  if (cur.state !== 'bound' || !cur.binding) return { next: null, event: null, outcome: 'already-held' };
  if (cur.binding.containerId !== containerId) return { next: null, event: null, outcome: 'stale' };
  const now = new Date(nowMs).toISOString();
  const next: Lease = { ...cur, state: 'held', lastBinding: cur.binding, updatedAt: now };
  delete next.binding;
  if (!cur.pinned) next.heldUntil = new Date(nowMs + holdSeconds * 1000).toISOString();
  return { next, event: event('released', cur, next, now, cur.binding.host), outcome: 'released' };
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
