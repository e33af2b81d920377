/**
 * `GET /v1/status` (berthctl status): the cluster at a glance. Hosts, pools
 * and leases come from the watch-fed view; the only etcd read is one range
 * over the alive keys, whose values carry each agent's last pass time
 * (agent/registration.ts notePass). summarizeStatus is pure.
 *
 * A lease needs attention when nothing will move it without help or time:
 *   host-dead              bound on a host being declared dead (the reaper is turning it held)
 *   host-absent            bound on a host whose agent is gone; it stays bound until
 *                          the host is declared dead (--host-dead-after) or forgotten
 *   host-unknown           bound on a host with no record at all
 *   host-serves-other-pool bound on a host whose agent serves another pool: no agent routes it
 *   hold-lapsed            held past its hold by more than HOLD_GRACE_MS: no expirer is sweeping
 */
import type { ClusterStatus, HostStatus, LeaseAttention, LeaseNeedingAttention } from '../common/api';
import { keys } from '../common/keys';
import type { Host, HostAlive, LeaseView, PoolUsage } from '../common/records';
import type { LeaseStore } from './store';

export const STATUS_ATTENTION_MAX = 100;
/** The expirer sweeps every second by default; a minute late means it is not running. */
export const HOLD_GRACE_MS = 60_000;

const WORST_FIRST: LeaseAttention[] = ['host-dead', 'host-absent', 'host-unknown', 'host-serves-other-pool', 'hold-lapsed'];

export interface StatusInput {
  nowMs: number;
  hosts: Host[];
  /** Alive keys by host name. */
  alive: Map<string, HostAlive>;
  pools: PoolUsage[];
  leases: Iterable<LeaseView>;
}

export function summarizeStatus(s: StatusInput): ClusterStatus {
  const byName = new Map(s.hosts.map((h) => [h.name, h]));
  const counts = new Map<string, number>();
  const attention: LeaseNeedingAttention[] = [];
  for (const l of s.leases) {
    const on = l.state === 'bound' ? l.binding?.host : undefined;
    if (on !== undefined) counts.set(on, (counts.get(on) ?? 0) + 1);
    const reason = attentionFor(l, on === undefined ? undefined : byName.get(on), on !== undefined && s.alive.has(on), s.nowMs);
    if (reason) attention.push({ pool: l.pool, ip: l.ip, identity: l.identity, state: l.state, ...(l.pinned ? { pinned: true } : {}), ...(on ? { host: on } : {}), reason });
  }
  attention.sort((a, b) => WORST_FIRST.indexOf(a.reason) - WORST_FIRST.indexOf(b.reason) || a.pool.localeCompare(b.pool) || a.ip.localeCompare(b.ip, undefined, { numeric: true }));
  const hosts: HostStatus[] = s.hosts.map((h) => {
    const alive = s.alive.get(h.name);
    const lastPassAt = alive?.lastPassAt;
    const out: HostStatus = {
      name: h.name, pool: h.pool, underlayIp: h.underlayIp, alive: alive !== undefined,
      liveness: h.dead ? 'dead' : alive ? 'alive' : 'absent', leases: counts.get(h.name) ?? 0,
    };
    if (!alive && h.absent) out.deadAt = h.absent.deadAt;
    if (lastPassAt) {
      out.lastPassAt = lastPassAt;
      out.lastPassAgeSeconds = Math.max(0, Math.round((s.nowMs - Date.parse(lastPassAt)) / 1000));
    }
    return out;
  }).sort((a, b) => a.name.localeCompare(b.name));
  return {
    at: new Date(s.nowMs).toISOString(),
    hosts,
    pools: [...s.pools].sort((a, b) => a.name.localeCompare(b.name)),
    attention: attention.slice(0, STATUS_ATTENTION_MAX),
    attentionTotal: attention.length,
  };
}

function attentionFor(l: LeaseView, host: Host | undefined, alive: boolean, nowMs: number): LeaseAttention | undefined {
  if (l.state === 'held') {
    const lapsed = !l.pinned && l.heldUntil !== undefined && Date.parse(l.heldUntil) + HOLD_GRACE_MS < nowMs;
    return lapsed ? 'hold-lapsed' : undefined;
  }
  if (!l.binding) return undefined;
  if (!host) return 'host-unknown';
  if (host.dead) return 'host-dead';
  if (!alive) return 'host-absent';
  if (host.pool !== l.pool) return 'host-serves-other-pool';
  return undefined;
}

/** The status as the controller serves it: the view, plus one read of the alive keys. */
export async function clusterStatus(store: LeaseStore): Promise<ClusterStatus> {
  const res = await store.etcd.getAll().prefix(keys.alivePrefix).exec();
  const alive = new Map<string, HostAlive>();
  for (const kv of res.kvs) {
    const name = kv.key.toString().slice(keys.alivePrefix.length);
    let v: HostAlive = { host: name, since: '' };
    try { v = JSON.parse(kv.value.toString()) as HostAlive; } catch { /* an alive key is alive whatever it says */ }
    alive.set(name, v);
  }
  const view = store.view;
  const leases = function* () { for (const m of view.leases.values()) yield* m.values(); };
  return summarizeStatus({
    nowMs: store.now(), hosts: [...view.hosts.values()].map((h) => h.value), alive, pools: store.listPools(), leases: leases(),
  });
}
