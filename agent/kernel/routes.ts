/**
 * Routes, permanent neighbours and VXLAN FDB entries: the per-container and
 * per-host state the planner manages. Every write uses replace semantics
 * (NLM_F_CREATE|NLM_F_REPLACE) and every delete treats "already gone" as
 * success. The list* functions return the planner's shapes (agent/plan.ts).
 */
import type { FdbSpec, NeighSpec, RouteSpec } from '../plan';
import {
  AF_BRIDGE, AF_INET, BERTH_RT_PROTO, REPLACE, RTNH_F_ONLINK, RT_TABLE_MAIN, cidr4, ip4, ip4text, mac, mactext, nl, nlGone,
  type Netlink, dump, castNetlinkError, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWROUTE } from './nl';
import { rtWrite } from './offthread';
import { listLinks } from './links';

/** name -> index, the resolution every write needs. */
export type LinkIndex = Map<string, number>;

export async function linkIndex(sock: Netlink): Promise<LinkIndex> {
  return new Map((await listLinks(sock)).map((l) => [l.name, l.index]));
}

function indexOf(links: LinkIndex, dev: string): number {
  const i = links.get(dev);
  if (i === undefined) throw new Error(`Request rejected: ENODEV`); // cast by nl() callers
  return i;
}

// --- routes ------------------------------------------------------------------------

export interface RouteOpts {
  /** rtm_protocol; defaults to BERTH_RT_PROTO, which marks the route as Berth's. */
  protocol?: number;
}

function routeMsg(r: RouteSpec, links: LinkIndex, o: RouteOpts = {}) {
  const { ip, prefix } = cidr4(r.dst);
  return {
    data: {
      family: AF_INET,
      dstLen: prefix,
      table: RT_TABLE_MAIN,
      protocol: o.protocol ?? BERTH_RT_PROTO,
      // A device route is scope link; one through a gateway is scope universe.
      scope: r.via ? 0 : 253,
      type: 1, // RTN_UNICAST
      ...(r.onlink ? { flags: { __unknown: RTNH_F_ONLINK } } : {}),
    },
    attrs: {
      ...(prefix > 0 ? { dst: ip4(ip) } : {}),
      oif: indexOf(links, r.dev),
      ...(r.via ? { gateway: ip4(r.via) } : {}),
      ...(r.src ? { prefsrc: ip4(r.src) } : {}),
    },
  };
}

export async function replaceRoute(sock: Netlink, links: LinkIndex, r: RouteSpec, o?: RouteOpts): Promise<void> {
  const op = `replace route ${r.dst}`;
  let m: ReturnType<typeof routeMsg>;
  try {
    m = routeMsg(r, links, o);
  } catch (e) {
    throw castNetlinkError(e, op);
  }
  await rtWrite(sock, op, RTM_NEWROUTE, { kind: 'route', ...m }, REPLACE.flags, () => sock.newRoute(m.data, m.attrs, REPLACE));
}

export async function deleteRoute(sock: Netlink, links: LinkIndex, r: RouteSpec, o?: RouteOpts): Promise<void> {
  if (!links.has(r.dev)) return; // device gone: the kernel dropped its routes with it
  const m = routeMsg(r, links, o);
  const op = `delete route ${r.dst}`;
  await nlGone(op, rtWrite(sock, op, RTM_DELROUTE, { kind: 'route', ...m }, 0, () => sock.delRoute(m.data, m.attrs)));
}

/**
 * IPv4 routes of the main table, as RouteSpecs. By default only Berth's
 * (rtm_protocol BERTH_RT_PROTO); pass protocol: 'any' for a pod's own table.
 */
export async function listRoutes(sock: Netlink, o: { protocol?: number | 'any'; dev?: string } = {}): Promise<RouteSpec[]> {
  // Sequential on purpose: a netlink socket runs one dump at a time (EBUSY).
  const links = await linkIndex(sock);
  const all = await dump(sock, 'list routes', () => sock.getRoutes({ family: AF_INET }));
  const names = new Map([...links].map(([n, i]) => [i, n]));
  const proto = o.protocol ?? BERTH_RT_PROTO;
  const out: RouteSpec[] = [];
  for (const { data, attrs } of all) {
    const table = attrs.table ?? data.table;
    if (data.family !== AF_INET || table !== RT_TABLE_MAIN) continue;
    if (proto !== 'any' && Number(data.protocol) !== proto) continue;
    const dev = attrs.oif !== undefined ? names.get(attrs.oif) : undefined;
    if (!dev || (o.dev && dev !== o.dev)) continue;
    const r: RouteSpec = { dst: `${ip4text(attrs.dst) ?? '0.0.0.0'}/${data.dstLen ?? 0}`, dev };
    const via = ip4text(attrs.gateway);
    if (via) r.via = via;
    if ((data.flags?.__unknown ?? 0) & RTNH_F_ONLINK) r.onlink = true;
    const src = ip4text(attrs.prefsrc);
    if (src && via) r.src = src; // the kernel fills prefsrc on device routes itself
    out.push(r);
  }
  return out;
}

/**
 * Whether the main table has an IPv4 default route out of a device other
 * than ifindex `index`. A route dump alone: unlike listRoutes, no link dump
 * to name the devices (ADD asks this inside a fresh pod netns).
 */
export async function defaultRouteElsewhere(sock: Netlink, index: number): Promise<boolean> {
  const all = await dump(sock, 'list routes', () => sock.getRoutes({ family: AF_INET }));
  return all.some(({ data, attrs }) => data.family === AF_INET && (attrs.table ?? data.table) === RT_TABLE_MAIN
    && (data.dstLen ?? 0) === 0 && attrs.oif !== undefined && attrs.oif !== index);
}

// --- neighbours (ARP) ---------------------------------------------------------------

const NUD_PERMANENT = { permanent: true as const };

export async function replaceNeigh(sock: Netlink, links: LinkIndex, n: NeighSpec): Promise<void> {
  await nl(`replace neigh ${n.ip}`, (async () =>
    sock.newNeighbor(
      { family: AF_INET, ifindex: indexOf(links, n.dev), state: NUD_PERMANENT },
      { dst: ip4(n.ip), lladdr: mac(n.mac) },
      REPLACE,
    ))());
}

export async function deleteNeigh(sock: Netlink, links: LinkIndex, n: NeighSpec): Promise<void> {
  if (!links.has(n.dev)) return;
  const op = `delete neigh ${n.ip}`;
  const data = { family: AF_INET, ifindex: indexOf(links, n.dev) };
  const attrs = { dst: ip4(n.ip) };
  await nlGone(op, rtWrite(sock, op, RTM_DELNEIGH, { kind: 'neighbor', data, attrs }, 0, () => sock.delNeighbor(data, attrs)));
}

/** Permanent IPv4 neighbours on dev (Berth owns every one on its VXLAN device). */
export async function listNeighs(sock: Netlink, dev: string): Promise<NeighSpec[]> {
  const links = await linkIndex(sock);
  const index = links.get(dev);
  if (index === undefined) return [];
  const all = await dump(sock, 'list neighbours', () => sock.getNeighbors({ family: AF_INET }));
  return all
    .filter((n) => n.data.family === AF_INET && n.data.ifindex === index && n.data.state?.permanent)
    .map((n) => ({ dev, ip: ip4text(n.attrs.dst)!, mac: mactext(n.attrs.lladdr)! }))
    .filter((n) => n.ip && n.mac);
}

// --- VXLAN FDB --------------------------------------------------------------------------

/** NTF_SELF: the entry belongs to the VXLAN device's own table, not a bridge's. */
const FDB_FLAGS = { self: true as const };

export async function replaceFdb(sock: Netlink, links: LinkIndex, f: FdbSpec): Promise<void> {
  await nl(`replace fdb ${f.mac}`, (async () =>
    sock.newNeighbor(
      { family: AF_BRIDGE, ifindex: indexOf(links, f.dev), state: NUD_PERMANENT, flags: FDB_FLAGS },
      { lladdr: mac(f.mac), dst: ip4(f.dst) },
      REPLACE,
    ))());
}

export async function deleteFdb(sock: Netlink, links: LinkIndex, f: FdbSpec): Promise<void> {
  if (!links.has(f.dev)) return;
  await nlGone(
    `delete fdb ${f.mac}`,
    sock.delNeighbor(
      { family: AF_BRIDGE, ifindex: indexOf(links, f.dev), flags: FDB_FLAGS },
      { lladdr: mac(f.mac), dst: ip4(f.dst) },
    ),
  );
}

/** Unicast FDB entries with a destination on dev. */
export async function listFdbs(sock: Netlink, dev: string): Promise<FdbSpec[]> {
  const links = await linkIndex(sock);
  const index = links.get(dev);
  if (index === undefined) return [];
  const all = await dump(sock, 'list fdb', () => sock.getNeighbors({ family: AF_BRIDGE }));
  return all
    .filter((n) => n.data.ifindex === index && n.attrs.dst && n.attrs.lladdr)
    .map((n) => ({ dev, mac: mactext(n.attrs.lladdr)!, dst: ip4text(n.attrs.dst)! }))
    .filter((f) => f.dst && f.mac !== '00:00:00:00:00:00');
}
