/**
 * Plumbing one pod interface: the kernel half of CNI ADD and DEL. The host
 * side of the veth joins berth0; the pod side is born inside the pod's netns
 * under its final name and gets <ip>/32 plus "default via <gateway> onlink",
 * so every packet leaves through the host (routed, never bridged between
 * hosts). ADD undoes itself on failure; DEL succeeds when things are gone.
 *
 * A repeated ADD keeps a pair that is still intact (host side and pod side
 * are each other's peer), so it reports the same MACs; anything else starts
 * over. The host route `<ip>/32 dev berth0` carries BERTH_RT_PROTO (190), the
 * default of replaceRoute, and is exactly what agent/desired.ts wants for a
 * local lease, so the reconciler sees no difference after an ADD.
 */
import { BRIDGE_NAME } from '../desired';
import { BerthError } from '../../common/errors';
import { deleteLink, createVeth, ensureAddress, getLink, setLinkAttrs, setUp, vethNameFor } from './links';
import { openNetnsFd, withNetns } from './netns';
import type { Netlink } from './nl';
import { deleteNeigh, deleteRoute, linkIndex, replaceRoute, type LinkIndex } from './routes';
import * as fs from 'node:fs';

export interface AttachSpec {
  containerId: string;
  ifName: string;
  /** /run/netns/NAME or /proc/PID/ns/net. */
  netns: string;
  ip: string;
  gateway: string;
  mtu: number;
  mac?: string;
  bridge?: string;
}

export interface Attachment {
  hostVeth: string;
  /** MAC of the host-side veth, for the CNI result. */
  hostMac: string;
  /** MAC of the pod-side interface, for the CNI result. */
  mac: string;
  sandbox: string;
  /** True when an intact pair from an earlier ADD was kept. */
  reused: boolean;
}

/** IFLA_LINK of a veth: the peer's ifindex (in the peer's netns). */
async function peerIndexOf(sock: Netlink, name: string): Promise<number | undefined> {
  try {
    const [m] = await sock.getLink({}, { ifname: name });
    const link = m?.attrs.link;
    return link && link.length >= 4 ? link.readUInt32LE(0) : undefined;
  } catch {
    return undefined;
  }
}

/** The host veth and the pod interface exist and are each other's peer. */
async function intactPair(host: Netlink, hostVeth: string, s: AttachSpec): Promise<boolean> {
  const hv = await getLink(host, hostVeth);
  if (!hv || hv.kind !== 'veth') return false;
  const hvPeer = await peerIndexOf(host, hostVeth);
  try {
    return await withNetns(s.netns, async (pod) => {
      const eth = await getLink(pod, s.ifName);
      if (!eth || eth.kind !== 'veth') return false;
      return hvPeer === eth.index && (await peerIndexOf(pod, s.ifName)) === hv.index;
    });
  } catch {
    return false;
  }
}

/**
 * name -> index for the one link a host route needs, by RTM_GETLINK rather
 * than a full link dump. The agent's host socket is shared with the
 * reconciler and with concurrent CNI requests, and a socket runs one dump at
 * a time: a second one fails with EBUSY. So the CNI path never dumps on it.
 */
export async function hostLinkIndex(host: Netlink, name: string): Promise<LinkIndex> {
  const l = await getLink(host, name);
  return new Map(l ? [[name, l.index]] : []);
}

/** rtm_protocol for routes inside the pod: RTPROT_BOOT, as `ip route add` uses. */
const POD_ROUTE_PROTO = 3;

export async function attachPod(host: Netlink, s: AttachSpec): Promise<Attachment> {
  const bridgeName = s.bridge ?? BRIDGE_NAME;
  const bridge = await getLink(host, bridgeName);
  if (!bridge) throw new BerthError('TryAgainLater', bridgeName, 'bridge not ready');
  const hostVeth = vethNameFor(s.containerId, s.ifName);
  const reused = await intactPair(host, hostVeth, s);
  if (!reused) {
    // Start over; deleting the host side removes the pod side too.
    await deleteLink(host, hostVeth);
    const fd = openNetnsFd(s.netns);
    try {
      await createVeth(host, { hostName: hostVeth, peerName: s.ifName, peerNetnsFd: fd, mtu: s.mtu, peerMac: s.mac });
    } finally {
      fs.closeSync(fd);
    }
  }
  try {
    const mac = await withNetns(s.netns, async (pod) => {
      const lo = await getLink(pod, 'lo');
      if (lo) await setUp(pod, lo);
      const eth = await getLink(pod, s.ifName);
      if (!eth) throw new BerthError('KernelError', s.ifName, 'pod interface vanished');
      if (reused) await setLinkAttrs(pod, eth, { mtu: s.mtu, mac: s.mac });
      await ensureAddress(pod, eth.index, `${s.ip}/32`);
      await setUp(pod, eth);
      const links = await linkIndex(pod);
      await replaceRoute(pod, links, { dst: '0.0.0.0/0', dev: s.ifName, via: s.gateway, onlink: true }, { protocol: POD_ROUTE_PROTO });
      return (await getLink(pod, s.ifName))?.mac ?? eth.mac!;
    });
    const hv = await getLink(host, hostVeth);
    if (!hv) throw new BerthError('KernelError', hostVeth, 'host veth vanished');
    await setLinkAttrs(host, hv, { master: bridge.index, mtu: s.mtu });
    await setUp(host, hv);
    const bridgeIndex: LinkIndex = new Map([[bridgeName, bridge.index]]);
    await replaceRoute(host, bridgeIndex, { dst: `${s.ip}/32`, dev: bridgeName });
    // A restarted pod keeps its IP but not its MAC: drop the host's cached one.
    await deleteNeigh(host, bridgeIndex, { ip: s.ip, dev: bridgeName, mac: '' });
    return { hostVeth, hostMac: hv.mac!, mac, sandbox: s.netns, reused };
  } catch (e) {
    await deleteLink(host, hostVeth).catch(() => undefined);
    throw e;
  }
}

/** Removes the veth (and with it the pod side) and the host route; idempotent. */
export async function detachPod(host: Netlink, s: { containerId: string; ifName: string; ip?: string; bridge?: string }) {
  await deleteLink(host, vethNameFor(s.containerId, s.ifName));
  if (s.ip) {
    const dev = s.bridge ?? BRIDGE_NAME;
    const links = await hostLinkIndex(host, dev);
    await deleteRoute(host, links, { dst: `${s.ip}/32`, dev });
    await deleteNeigh(host, links, { ip: s.ip, dev, mac: '' });
  }
}

