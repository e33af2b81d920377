/**
 * Pure decisions about hosts whose agent is away (docs/architecture.md,
 * "Hosts: liveness and death").
 *
 * An agent's absence (its alive key gone) changes nothing by itself: peers
 * keep routing to its record and its leases stay bound. The host reaper
 * (controller/host-reaper.ts, one elected replica) declares the host dead
 * once *it* has seen the alive key absent for `deadAfterMs` without a break.
 * The clock is the reaper's own observation and lives in its memory, so
 * after a failover the new leader starts counting afresh: a host is never
 * declared dead early, at worst up to one `deadAfterMs` late. That is also
 * what makes a whole-cluster outage safe: absence nobody observed never counts.
 *
 * Declaring dead is a persisted intent (the record gets `dead`), then each
 * bound lease of the host becomes held (orphanLease), then the record goes.
 * A crash in between is finished by the next pass of whoever leads, because
 * a dead-marked record is itself the instruction ('finish').
 */
import type { Host, Lease, LeaseView } from '../common/records';
import { decideRelease, type Decision } from './lease-rules';

export interface HostObservation {
  record: Host;
  alive: boolean;
}

export type ReaperAction =
  /** First seen absent by this leader: annotate the record (display only). */
  | { kind: 'mark-absent'; host: string; since: string; deadAt: string }
  /** Absent for deadAfterMs as seen by this leader: persist the death. */
  | { kind: 'declare-dead'; host: string; reason: string }
  /** The record says dead: turn its bound leases held, then delete it. */
  | { kind: 'finish'; host: string };

export interface ReaperPlan {
  /** host -> when this leader first saw its alive key absent (ms). */
  clock: Map<string, number>;
  actions: ReaperAction[];
}

export function planReaper(hosts: readonly HostObservation[], clock: ReadonlyMap<string, number>, nowMs: number, deadAfterMs: number): ReaperPlan {
  const next = new Map<string, number>();
  const actions: ReaperAction[] = [];
  for (const { record, alive } of [...hosts].sort((a, b) => a.record.name.localeCompare(b.record.name))) {
    const host = record.name;
    if (alive) continue; // the clock resets; the agent clears its own annotations
    if (record.dead) { actions.push({ kind: 'finish', host }); continue; }
    const first = clock.get(host) ?? nowMs;
    next.set(host, first);
    const deadAtMs = first + deadAfterMs;
    if (nowMs >= deadAtMs) {
      const since = record.absent?.since ?? new Date(first).toISOString();
      actions.push({ kind: 'declare-dead', host, reason: `agent absent since ${since}, declared dead after ${Math.round(deadAfterMs / 1000)}s` });
    } else if (!clock.has(host) || record.absent?.deadAt !== new Date(deadAtMs).toISOString()) {
      // Keep the first observation ever made (a previous leader's) for display; the deadline is ours.
      actions.push({ kind: 'mark-absent', host, since: record.absent?.since ?? new Date(first).toISOString(), deadAt: new Date(deadAtMs).toISOString() });
    }
  }
  return { clock: next, actions };
}

/**
 * Pure: a dead host's bound lease becomes held, as a release by its own
 * container would make it (the pool's hold; pinned stays pinned, held with
 * no expiry), recorded as 'orphaned' with who declared the death and why.
 * Null when the lease is not bound on that host (nothing to do).
 */
export function orphanLease(cur: Lease | LeaseView, host: string, holdSeconds: number, nowMs: number, actor: 'reaper' | 'operator', reason: string): Decision | null {
  if (cur.state !== 'bound' || cur.binding?.host !== host) return null;
  const { revision: _drop, ...lease } = cur as LeaseView; // the fencing token is never stored
  const d = decideRelease(lease, lease.binding!.containerId, holdSeconds, nowMs);
  if ((!d.next && !d.frees) || !d.event) return null;
  // A hold of 0 (a container identity, an explicit-only pool) frees the address, as its release would.
  return { next: d.next, ...(d.frees ? { frees: true } : {}), event: { ...d.event, kind: 'orphaned', actor, reason } };
}
