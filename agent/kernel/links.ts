/**
 * Links and addresses over one netlink socket (whichever netns it lives in).
 * ensureX helpers read first and write only what differs, so calling them on
 * every reconcile pass touches nothing when the device is already right.
 */
import { AttrStream, FlagsGet, rt } from 'netlink';
import { BerthError } from '../../common/errors';
import { GATEWAY_MAC } from '../desired';
import {
  AF_INET, CREATE_EXCL, REPLACE, VXLAN, cidr4, ip4, ip4text, isErrno, linkinfo, mac, mactext, nl, nlGone,
  parseAttrs, parseLinkinfo, vethPeer, vxlanData, type Netlink, dump, linkRequest, RTM_NEWADDR, RTM_NEWLINK, RTM_SETLINK, SKIP_STATS } from './nl';
import { rtWrite } from './offthread';
import { requestOffThread } from './netns';

export interface LinkInfo {
  index: number;
  name: string;
  kind?: string;
  mtu?: number;
  mac?: string;
  up: boolean;
  master?: number;
  /** Parsed kind-specific data (IFLA_INFO_DATA), when the kernel sends it. */
  data?: Map<number, Buffer>;
}

/**
 * A link message's payload (struct ifinfomsg, then attributes) as a
 * LinkInfo, reading only what Berth uses. The netlink package parses every
 * attribute of every link into objects, which was most of a getLink's CPU
 * (and of a pass's link dump); this reads the fixed header and five
 * attributes (include/uapi/linux/rtnetlink.h, if_link.h). `peer` is
 * IFLA_LINK: for a veth, its peer's ifindex.
 */
export function linkInfoOf(payload: Buffer): LinkInfo & { peer?: number } {
  if (payload.length < IFINFOMSG_LEN) throw new BerthError('KernelError', `link message of ${payload.length} bytes`, 'short link message');
  const attrs = parseAttrs(payload.subarray(IFINFOMSG_LEN));
  const u32 = (t: number) => { const b = attrs.get(t); return b && b.length >= 4 ? b.readUInt32LE(0) : undefined; };
  const li = parseLinkinfo(attrs.get(IFLA.LINKINFO));
  const info: LinkInfo & { peer?: number } = {
    index: payload.readInt32LE(4),
    name: attrs.get(IFLA.IFNAME)?.toString().replace(/\0+$/, '') ?? '',
    kind: li.kind,
    mtu: u32(IFLA.MTU),
    mac: mactext(attrs.get(IFLA.ADDRESS)),
    up: (payload.readUInt32LE(8) & IFF_UP) !== 0,
    master: u32(IFLA.MASTER) || undefined,
    data: li.data,
  };
  const peer = u32(IFLA.LINK);
  if (peer !== undefined) info.peer = peer;
  return info;
}

const IFINFOMSG_LEN = 16;
const IFF_UP = 1;
/** IFLA_* of the link messages Berth reads (if_link.h). */
const IFLA = { ADDRESS: 1, IFNAME: 3, MTU: 4, LINK: 5, MASTER: 10, LINKINFO: 18 } as const;
/** RTM_GETLINK, RTM_NEWLINK (rtnetlink.h). */
const RTM_GETLINK = 18;
const NEWLINK = 16;

/** The GETLINK request body: ifinfomsg, then IFLA_IFNAME (when named) and IFLA_EXT_MASK (skip statistics). */
function getLinkBody(name?: string): Uint8Array[] {
  const body = new AttrStream();
  rt.formatLinkMessage({ kind: 'link', data: {}, attrs: { ...(name !== undefined ? { ifname: name } : {}), extMask: SKIP_STATS } }, body);
  return body.bufs;
}

/** The payloads of the RTM_NEWLINK messages in an answer. */
const linkPayloads = (msgs: { type: number; data: Buffer }[]) => msgs.filter((m) => m.type === NEWLINK).map((m) => m.data);

export async function listLinks(sock: Netlink): Promise<LinkInfo[]> {
  const [msgs] = await dump(sock, 'list links', () => sock.socket.request(RTM_GETLINK, getLinkBody(), { flags: FlagsGet.DUMP }));
  return linkPayloads(msgs).map(linkInfoOf);
}

/** The link called name, with its IFLA_LINK (peer) when it has one; undefined when there is none. */
export async function getLinkWithPeer(sock: Netlink, name: string): Promise<(LinkInfo & { peer?: number }) | undefined> {
  try {
    const [msgs] = await nl(`get link ${name}`, sock.socket.request(RTM_GETLINK, getLinkBody(name)));
    const [p] = linkPayloads(msgs);
    return p && linkInfoOf(p);
  } catch (e) {
    if (isErrno(e, 'ENODEV', 'ENOENT')) return undefined;
    throw e;
  }
}

export async function getLink(sock: Netlink, name: string): Promise<LinkInfo | undefined> {
  const l = await getLinkWithPeer(sock, name);
  if (l) delete l.peer;
  return l;
}

async function mustGetLink(sock: Netlink, name: string): Promise<LinkInfo> {
  const l = await getLink(sock, name);
  if (!l) throw new BerthError('NotFound', name, 'no such link');
  return l;
}

export async function deleteLink(sock: Netlink, name: string): Promise<void> {
  const l = await getLink(sock, name);
  if (l) await nlGone(`delete link ${name}`, sock.delLink({ index: l.index }));
}

export async function setUp(sock: Netlink, l: LinkInfo): Promise<void> {
  if (!l.up) await nl(`up ${l.name}`, sock.setLink({ index: l.index, flags: { up: true }, change: { up: true } }));
}

/** Sets MTU, MAC and master only where they differ from l. */
export async function setLinkAttrs(sock: Netlink, l: LinkInfo, want: { mtu?: number; mac?: string; master?: number }) {
  const attrs: { mtu?: number; address?: Buffer; master?: number } = {};
  if (want.mtu !== undefined && want.mtu !== l.mtu) attrs.mtu = want.mtu;
  if (want.mac !== undefined && want.mac.toLowerCase() !== l.mac) attrs.address = mac(want.mac);
  if (want.master !== undefined && want.master !== l.master) attrs.master = want.master;
  if (Object.keys(attrs).length) await nl(`set ${l.name} ${Object.keys(attrs).join(',')}`, sock.setLink({ index: l.index }, attrs));
}

/** Creates a link unless one with that name exists; returns the fresh view either way. */
async function createOrGet(sock: Netlink, name: string, kind: string, create: () => Promise<unknown>): Promise<LinkInfo> {
  const have = await getLink(sock, name);
  if (have && have.kind !== kind) throw new BerthError('KernelError', `${name} is a ${have.kind ?? 'plain'} link, want ${kind}`, 'link exists with another kind');
  if (!have) {
    try {
      await nl(`create ${kind} ${name}`, create());
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e; // lost a race: re-read and verify below
    }
  }
  return mustGetLink(sock, name);
}

// --- addresses -----------------------------------------------------------------

export async function listAddresses(sock: Netlink, index?: number): Promise<{ index: number; cidr: string }[]> {
  const all = await dump(sock, 'list addresses', () => sock.getAddresses({ family: AF_INET }));
  return all
    .filter((a) => a.data.family === AF_INET && (index === undefined || a.data.index === index))
    .map((a) => ({ index: a.data.index!, cidr: `${ip4text(a.attrs.local ?? a.attrs.address)}/${a.data.prefixlen}` }));
}

/** Adds ip/prefix to the link (replace semantics). Extra addresses are left alone. */
/** Adds cidr unless present; fresh: the link is known to have no address (skip the listing). */
export async function ensureAddress(sock: Netlink, index: number, cidr: string, o: { fresh?: boolean } = {}): Promise<void> {
  const { ip, prefix } = cidr4(cidr);
  if (!o.fresh && (await listAddresses(sock, index)).some((a) => a.cidr === `${ip}/${prefix}`)) return;
  const data = { family: AF_INET, prefixlen: prefix, index };
  const attrs = { local: ip4(ip), address: ip4(ip) };
  await rtWrite(sock, `add address ${cidr}`, RTM_NEWADDR, { kind: 'address', data, attrs }, REPLACE.flags, () => sock.newAddress(data, attrs, REPLACE));
}

export async function deleteAddress(sock: Netlink, index: number, cidr: string): Promise<void> {
  const { ip, prefix } = cidr4(cidr);
  await nlGone(`delete address ${cidr}`, sock.delAddress({ family: AF_INET, prefixlen: prefix, index }, { local: ip4(ip), address: ip4(ip) }));
}

// --- devices -------------------------------------------------------------------

export interface BridgeSpec {
  name: string;
  /** e.g. "198.18.0.1/32": the pool gateway, the same on every host. */
  address: string;
  mtu: number;
  /** Fixed MAC; defaults to GATEWAY_MAC. */
  mac?: string;
}

export async function ensureBridge(sock: Netlink, b: BridgeSpec): Promise<LinkInfo> {
  const l = await createOrGet(sock, b.name, 'bridge', () =>
    sock.newLink({}, { ifname: b.name, mtu: b.mtu, linkinfo: linkinfo('bridge') }, CREATE_EXCL),
  );
  await setLinkAttrs(sock, l, { mtu: b.mtu, mac: b.mac ?? GATEWAY_MAC });
  await ensureAddress(sock, l.index, b.address);
  await setUp(sock, l);
  return l;
}

export interface VxlanSpec {
  name: string;
  vni: number;
  /** Own underlay address (IFLA_VXLAN_LOCAL). */
  local: string;
  port: number;
  mtu: number;
  mac?: string;
}

function vxlanMatches(l: LinkInfo, v: VxlanSpec): boolean {
  const d = l.data;
  if (!d) return true; // kernel sent no INFO_DATA: nothing to compare against
  return (
    d.get(VXLAN.ID)?.readUInt32LE(0) === v.vni &&
    ip4text(d.get(VXLAN.LOCAL)) === v.local &&
    d.get(VXLAN.PORT)?.readUInt16BE(0) === v.port &&
    d.get(VXLAN.LEARNING)?.[0] === 0
  );
}

/**
 * VXLAN parameters can't be changed on a live device, so a mismatch (say the
 * underlay address changed) means delete and recreate. Learning is off: the
 * agent writes every FDB entry itself from etcd.
 */
export async function ensureVxlan(sock: Netlink, v: VxlanSpec): Promise<LinkInfo> {
  const create = () =>
    sock.newLink(
      {},
      { ifname: v.name, mtu: v.mtu, ...(v.mac ? { address: mac(v.mac) } : {}), linkinfo: linkinfo('vxlan', vxlanData(v)) },
      CREATE_EXCL,
    );
  let l = await createOrGet(sock, v.name, 'vxlan', create);
  if (!vxlanMatches(l, v)) {
    await deleteLink(sock, v.name);
    l = await createOrGet(sock, v.name, 'vxlan', create);
  }
  await setLinkAttrs(sock, l, { mtu: v.mtu, mac: v.mac });
  await setUp(sock, l);
  return l;
}

export interface VethSpec {
  /** Host-side name, at most 15 bytes. */
  hostName: string;
  /** Name inside the pod's netns (CNI_IFNAME), e.g. eth0. */
  peerName: string;
  /** fd of the pod netns (from openNetnsFd): the peer is born there. */
  peerNetnsFd: number;
  mtu: number;
  peerMac?: string;
  /** The host side's MAC (default: the kernel picks one). */
  hostMac?: string;
  /** Host side joins this bridge at birth. */
  master?: number;
  /** The host side comes up at birth (the peer cannot: see vethPeer). */
  up?: boolean;
}

/**
 * Creates the pair with the peer placed straight into the pod's netns under
 * its final name, so there is no window where it sits in the host netns
 * with a temporary name. Returns the host side.
 */
export async function createVeth(sock: Netlink, v: VethSpec): Promise<LinkInfo> {
  await createVethPair(sock, v);
  return mustGetLink(sock, v.hostName);
}

/** createVeth without reading the new link back (the caller knows what it needs: name, MAC). */
export async function createVethPair(sock: Netlink, v: VethSpec): Promise<void> {
  const op = `create veth ${v.hostName}`;
  const data: rt.Link = v.up ? { flags: { up: true }, change: { up: true } } : {};
  const attrs = {
    ifname: v.hostName,
    mtu: v.mtu,
    ...(v.hostMac !== undefined ? { address: mac(v.hostMac) } : {}),
    ...(v.master !== undefined ? { master: v.master } : {}),
    linkinfo: linkinfo('veth', vethPeer({ ifname: v.peerName, netnsFd: v.peerNetnsFd, mtu: v.mtu, mac: v.peerMac })),
  };
  // Off the JS thread where the socket's netns is known: the kernel creates
  // the pair and moves the peer inside sendmsg(2), milliseconds of it.
  const off = requestOffThread(sock, op, linkRequest(RTM_NEWLINK, data, attrs, CREATE_EXCL.flags));
  await (off ?? nl(op, sock.newLink(data, attrs, CREATE_EXCL)));
}

/** setUp, with the request sent from a pool thread when the socket's netns is known (requestOffThread). */
export async function setUpOffThread(sock: Netlink, l: LinkInfo): Promise<void> {
  if (l.up) return;
  const op = `up ${l.name}`;
  const data: rt.Link = { index: l.index, flags: { up: true }, change: { up: true } };
  await (requestOffThread(sock, op, linkRequest(RTM_SETLINK, data, {})) ?? nl(op, sock.setLink(data)));
}

export { vethNameFor } from '../desired';
