/**
 * Pure: the kernel state one host should hold, computed from the etcd view
 * (hosts and leases). The routed, flannel-style layout it produces is
 * described in docs/dataplane.md:
 *
 *   local bound lease    ->  <ip>/32 dev berth0                       (scope link)
 *   remote bound lease   ->  <ip>/32 via <remote underlay> dev berth.vxlan onlink src <own underlay>
 *   each remote host     ->  neigh <remote underlay> lladdr <remote vtep mac> dev berth.vxlan
 *                            fdb   <remote vtep mac> dst <remote underlay> dev berth.vxlan
 *
 * One route per remote container, not one per host: addresses move between
 * hosts (a restarted pod keeps its IP), so no host owns a subnet.
 */
import type { Host, LeaseView } from '../common/records';
import { VXLAN_OVERHEAD, VXLAN_PORT } from '../common/records';
import type { FirewallWant } from './firewall';
import type { FdbSpec, KernelState, NeighSpec, RouteSpec } from './plan';

export const BRIDGE_NAME = 'berth0';
export const VXLAN_NAME = 'berth.vxlan';

export interface DesiredInput {
  /** This host's name, as registered under /berth/v1/hosts/. */
  self: string;
  hosts: Host[];
  leases: LeaseView[];
  /** The pool this agent serves; leases of other pools are ignored. */
  pool: { name: string; cidr: string; gateway: string };
  underlayMtu: number;
}

/** Device-level settings (ensured by agent/kernel/devices.ts, not planned per pass). */
export interface DeviceSpec {
  bridge: { name: string; address: string; mtu: number };
  vxlan: { name: string; vni: number; local: string; port: number; mtu: number; mac?: string };
}

/** A local pod as the fast path sees it: its address and its host-side veth. */
export interface LocalEndpoint {
  ip: string;
  veth: string;
}

export interface Desired extends KernelState {
  devices?: DeviceSpec;
  /** Local bound leases with their host veth (agent/fastpath.ts); not planned per pass. */
  locals?: LocalEndpoint[];
  /** Berth's nftables tables (agent/firewall.ts); not planned per pass, compared as a whole. */
  firewall?: FirewallWant;
}

export function overlayMtu(underlayMtu: number): number {
  return underlayMtu - VXLAN_OVERHEAD;
}

/** Fencing: when two leases claim one address, the higher etcd revision wins. */
function newer(a: LeaseView, b: LeaseView): boolean {
  return BigInt(a.revision) > BigInt(b.revision);
}

export function winningLeases(leases: LeaseView[], pool?: string): Map<string, LeaseView> {
  const byIp = new Map<string, LeaseView>();
  for (const l of leases) {
    if (pool !== undefined && l.pool !== pool) continue;
    const cur = byIp.get(l.ip);
    if (!cur || newer(l, cur)) byIp.set(l.ip, l);
  }
  return byIp;
}

export function desiredState(input: DesiredInput): Desired {
  const hosts = new Map(input.hosts.map((h) => [h.name, h]));
  const me = hosts.get(input.self);
  const routes: RouteSpec[] = [];
  const neighs: NeighSpec[] = [];
  const fdbs: FdbSpec[] = [];
  const locals: LocalEndpoint[] = [];

  // Remote hosts: one neighbour + one FDB entry each. A host that shares our
  // underlay address is a stale registration of ourselves; skip it.
  const remotes = new Map<string, Host>();
  for (const h of hosts.values()) {
    if (h.name === input.self || (me && h.underlayIp === me.underlayIp)) continue;
    if (me && h.vni !== me.vni) continue;
    remotes.set(h.name, h);
  }
  const seenVtep = new Set<string>();
  for (const h of [...remotes.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    if (seenVtep.has(h.underlayIp)) continue; // one next hop per underlay address
    seenVtep.add(h.underlayIp);
    const vtepMac = h.vtepMac.toLowerCase();
    neighs.push({ dev: VXLAN_NAME, ip: h.underlayIp, mac: vtepMac });
    fdbs.push({ dev: VXLAN_NAME, mac: vtepMac, dst: h.underlayIp });
  }

  for (const l of routedLeases(input)) {
    const dst = `${l.ip}/32`;
    if (l.binding.host === input.self) {
      routes.push({ dst, dev: BRIDGE_NAME });
      locals.push(localEndpoint(l));
      continue;
    }
    const h = remotes.get(l.binding.host);
    if (!h || !me) continue; // unregistered host: no route beats a wrong one
    routes.push({ dst, dev: VXLAN_NAME, via: h.underlayIp, onlink: true, src: me.underlayIp });
  }
  routes.sort((a, b) => (a.dst < b.dst ? -1 : a.dst > b.dst ? 1 : 0));

  const mtu = overlayMtu(input.underlayMtu);
  const devices: DeviceSpec | undefined = me && {
    bridge: { name: BRIDGE_NAME, address: `${input.pool.gateway}/32`, mtu },
    vxlan: { name: VXLAN_NAME, vni: me.vni, local: me.underlayIp, port: VXLAN_PORT, mtu, mac: me.vtepMac.toLowerCase() },
  };
  return { routes, neighs, fdbs, devices, locals: sortedByIp(locals) };
}

type Routed = LeaseView & { binding: NonNullable<LeaseView['binding']> };

/** The pool's bound leases that get a route: one per address (fencing), never the gateway. */
function routedLeases(input: Pick<DesiredInput, 'leases' | 'pool'>): Routed[] {
  const out: Routed[] = [];
  for (const l of winningLeases(input.leases, input.pool.name).values()) {
    if (l.state === 'bound' && l.binding && l.ip !== input.pool.gateway) out.push(l as Routed);
  }
  return out;
}

const localEndpoint = (l: Routed): LocalEndpoint => ({ ip: l.ip, veth: vethNameFor(l.binding.containerId, l.binding.ifName) });
const sortedByIp = (xs: LocalEndpoint[]) => xs.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));

/**
 * desiredState(input).locals alone, without the routes and neighbours: what
 * a CNI ADD's firewall admission needs, on every ADD.
 */
export function localEndpoints(input: Pick<DesiredInput, 'self' | 'leases' | 'pool'>): LocalEndpoint[] {
  return sortedByIp(routedLeases(input).filter((l) => l.binding.host === input.self).map(localEndpoint));
}

/**
 * berth0's MAC, the same on every host. A bridge without an explicit address
 * inherits one of its ports' MACs and changes it when that port goes away,
 * which leaves every local pod's cached gateway MAC pointing nowhere.
 */
export const GATEWAY_MAC = '0e:be:00:00:00:01';

/**
 * A stable, locally administered unicast MAC for a host's VTEP, so a
 * restarted agent re-registers the same address and peers' FDB stays right.
 */
export function vtepMacFor(hostName: string): string {
  let h = 0x811c9dc5; // FNV-1a, 32 bits
  for (const c of Buffer.from(hostName)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  const bytes = [0x0e, 0xbe, (h >>> 24) & 0xff, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * The MAC Berth gives a host-side veth: 0e:bf and the 32-bit hash its name
 * carries (locally administered, unicast). Unique wherever the names are,
 * and known without asking the kernel after creating the pair.
 */
export function hostVethMacFor(vethName: string): string {
  const hex = /^bth([0-9a-f]{8})$/.exec(vethName)?.[1];
  if (!hex) throw new Error(`not a berth veth name: ${vethName}`);
  return `0e:bf:${hex.match(/../g)!.join(':')}`;
}

/** Host-side veth name for a container: stable, unique enough, 15 bytes max. */
export function vethNameFor(containerId: string, ifName: string): string {
  const key = `${containerId}/${ifName}`;
  const hit = vethNames.get(key);
  if (hit !== undefined) return hit;
  let h = 0x811c9dc5;
  for (const c of Buffer.from(key)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  const name = `bth${h.toString(16).padStart(8, '0')}`;
  // Every local lease's name is needed on every ADD (localEndpoints): remember them, bounded.
  if (vethNames.size >= VETH_NAMES_MAX) vethNames.clear();
  vethNames.set(key, name);
  return name;
}

const VETH_NAMES_MAX = 16_384;
const vethNames = new Map<string, string>();
