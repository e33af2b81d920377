/**
 * Plumbing one pod interface: the kernel half of CNI ADD and DEL. The host
 * side of the veth joins berth0; the pod side is born inside the pod's netns
 * under its final name and gets <ip>/32 plus "default via <gateway> onlink",
 * so every packet leaves through the host (routed, never bridged between
 * hosts). ADD undoes itself on failure; DEL succeeds when things are gone.
 *
 * ADD comes in two halves so that the first can overlap the controller's
 * bind: plugVeth needs no address (pair, MTU, bridge port, links up),
 * addressPod needs it (pod address and default route, host route).
 *
 * A repeated ADD keeps a pair that is still intact (host side and pod side
 * are each other's peer), so it reports the same MACs; anything else starts
 * over. The host route `<ip>/32 dev berth0` carries BERTH_RT_PROTO (190), the
 * default of replaceRoute, and is exactly what agent/desired.ts wants for a
 * local lease, so the reconciler sees no difference after an ADD.
 *
 * DEL takes the pair out of service at once (host side down and off the
 * bridge, host route gone) and deletes it in the background: the kernel's
 * veth deletion waits out RCU grace periods (15-25 ms), which would
 * otherwise be most of DEL's latency. A later plugVeth of the same pair
 * waits for that deletion, so nothing can observe it half-done; a deletion
 * the agent never finishes (it died) ends with the pod's netns, which takes
 * the pair with it.
 */
import { BRIDGE_NAME, hostVethMacFor } from '../desired';
import { BerthError } from '../../common/errors';
import { deleteLink, createVethPair, ensureAddress, getLink, getLinkWithPeer, setLinkAttrs, setUp, setUpOffThread, vethNameFor } from './links';
import { deleteLinkOffThread, netnsOf, openNetnsFd, requestOffThread, withNetns } from './netns';
import type { Netlink } from './nl';
import { RTM_SETLINK, linkRequest, nlGone } from './nl';
import { defaultRouteElsewhere, deleteNeigh, deleteRoute, replaceRoute, type LinkIndex } from './routes';
import * as fs from 'node:fs';
import type { rt } from 'netlink';

export interface PlugSpec {
  containerId: string;
  ifName: string;
  /** /run/netns/NAME or /proc/PID/ns/net. */
  netns: string;
  mtu: number;
  mac?: string;
  bridge?: string;
  /**
   * The pool's gateway and CIDR as the agent knows them: the pod's route is
   * set while plugging, so that ADD does it while the controller binds
   * rather than after. addressPod checks it against the bound lease's.
   */
  route?: { gateway: string; poolCidr: string };
}

export interface AttachSpec extends PlugSpec {
  ip: string;
  gateway: string;
}

/** A pair in place and up, without addresses yet. */
export interface Plugged {
  spec: PlugSpec;
  hostVeth: string;
  /** The host veth's ifindex, when this plug read it (a kept pair); else getLink it. */
  hostIndex?: number;
  hostMac: string;
  bridgeIndex: number;
  /** True when an intact pair from an earlier ADD was kept. */
  reused: boolean;
  /** The pod route set while plugging (spec.route), if any. */
  routed?: { dst: string; gateway: string };
  /** The pod interface as a fresh plug left it (addressPod need not look it up again). */
  pod?: { index: number; mac: string };
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
  /** The destination routed via the gateway on this interface: 0.0.0.0/0, or the pool's CIDR (see addressPod). */
  routeDst: string;
}

/** Background deletions by (netns, host veth name); the name is unique per containerId/ifName. */
const reaping = new Map<string, Promise<void>>();
const reapKey = (host: Netlink, hostVeth: string) => `${netnsOf(host) ?? '?'}\0${hostVeth}`;

/** Resolves when no deletion of hostVeth is in flight. */
async function reaped(host: Netlink, hostVeth: string): Promise<void> {
  await reaping.get(reapKey(host, hostVeth));
}

/** Waits for every background deletion (agent shutdown, tests). */
export async function drainReaping(): Promise<void> {
  while (reaping.size > 0) await Promise.all(reaping.values());
}

/**
 * Deletes hostVeth in the background; resolves when it is gone (never
 * rejects: onError hears about a failure, and the pair, already down and off
 * the bridge, then waits for the pod's netns to go or the next ADD).
 */
function reap(host: Netlink, hostVeth: string, onError: (e: unknown) => void): Promise<void> {
  const key = reapKey(host, hostVeth);
  const pending = reaping.get(key);
  if (pending) return pending;
  const done = deleteVeth(host, hostVeth).catch(onError).finally(() => reaping.delete(key));
  reaping.set(key, done);
  return done;
}

/** Deletes hostVeth (and so its peer), off the JS thread when the socket's netns is known. */
async function deleteVeth(host: Netlink, hostVeth: string): Promise<void> {
  const off = deleteLinkOffThread(host, hostVeth);
  if (!off) return deleteLink(host, hostVeth);
  try {
    await off;
  } catch (e) {
    throw new BerthError('KernelError', `delete link ${hostVeth}: ${(e as Error).message}`);
  }
}

/** IFLA_LINK of a veth: the peer's ifindex (in the peer's netns). */
async function peerIndexOf(sock: Netlink, name: string): Promise<number | undefined> {
  try {
    return (await getLinkWithPeer(sock, name))?.peer;
  } catch {
    return undefined;
  }
}

/**
 * intact: the host veth and the pod interface exist and are each other's
 * peer; absent: there is no link by the host veth's name; other: there is
 * one, but not that pair (to be deleted before a new pair takes the name).
 */
async function pairState(host: Netlink, hostVeth: string, s: PlugSpec): Promise<'intact' | 'absent' | 'other'> {
  const hv = await getLink(host, hostVeth);
  if (!hv) return 'absent';
  if (hv.kind !== 'veth') return 'other';
  const hvPeer = await peerIndexOf(host, hostVeth);
  try {
    return await withNetns(s.netns, async (pod) => {
      const eth = await getLink(pod, s.ifName);
      if (!eth || eth.kind !== 'veth') return 'other';
      return hvPeer === eth.index && (await peerIndexOf(pod, s.ifName)) === hv.index ? 'intact' : 'other';
    });
  } catch {
    return 'other';
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

/**
 * First half of ADD: the veth pair (kept when intact), MTU, the host side on
 * the bridge, both sides and the pod's lo up. Needs no address.
 */
export async function plugVeth(host: Netlink, s: PlugSpec): Promise<Plugged> {
  const bridgeName = s.bridge ?? BRIDGE_NAME;
  const hostVeth = vethNameFor(s.containerId, s.ifName);
  await reaped(host, hostVeth);
  const [bridge, pair] = await Promise.all([getLink(host, bridgeName), pairState(host, hostVeth, s)]);
  if (!bridge) throw new BerthError('TryAgainLater', bridgeName, 'bridge not ready');
  if (pair === 'intact') return reusePair(host, hostVeth, bridge.index, s);
  // Start over; deleting the host side removes the pod side too.
  if (pair === 'other') await deleteVeth(host, hostVeth);
  const fd = openNetnsFd(s.netns);
  const hostMac = hostVethMacFor(hostVeth);
  try {
    await createVethPair(host, {
      hostName: hostVeth, peerName: s.ifName, peerNetnsFd: fd, mtu: s.mtu, peerMac: s.mac, hostMac, master: bridge.index, up: true,
    });
  } finally {
    fs.closeSync(fd);
  }
  try {
    const plugged = await withNetns(s.netns, async (pod) => {
      const [lo, eth] = await Promise.all([getLink(pod, 'lo'), getLink(pod, s.ifName)]);
      if (!eth) throw new BerthError('KernelError', s.ifName, 'pod interface vanished');
      await Promise.all([lo && setUpOffThread(pod, lo), setUpOffThread(pod, eth)]);
      const podIf = { index: eth.index, mac: eth.mac! };
      if (!s.route) return { podIf };
      const dst = await podRoute(pod, eth.index, s.ifName, s.route);
      return { podIf, routed: { dst, gateway: s.route.gateway } };
    });
    return { spec: s, hostVeth, hostMac, bridgeIndex: bridge.index, reused: false, pod: plugged.podIf, ...(plugged.routed ? { routed: plugged.routed } : {}) };
  } catch (e) {
    await deleteVeth(host, hostVeth).catch(() => undefined);
    throw e;
  }
}

/** A repeated ADD: bring the kept pair back to spec (MTU, MAC, bridge port, up). */
async function reusePair(host: Netlink, hostVeth: string, bridgeIndex: number, s: PlugSpec): Promise<Plugged> {
  await withNetns(s.netns, async (pod) => {
    const lo = await getLink(pod, 'lo');
    if (lo) await setUp(pod, lo);
    const eth = await getLink(pod, s.ifName);
    if (!eth) throw new BerthError('KernelError', s.ifName, 'pod interface vanished');
    await setLinkAttrs(pod, eth, { mtu: s.mtu, mac: s.mac });
    await setUp(pod, eth);
  });
  const hv = await getLink(host, hostVeth);
  if (!hv) throw new BerthError('KernelError', hostVeth, 'host veth vanished');
  await setLinkAttrs(host, hv, { master: bridgeIndex, mtu: s.mtu });
  await setUp(host, hv);
  return { spec: s, hostVeth, hostIndex: hv.index, hostMac: hv.mac!, bridgeIndex, reused: true };
}

/**
 * Second half of ADD: <ip>/32 and the default route in the pod, the host route.
 *
 * The default route only when no other interface of the pod has it: a
 * second interface (its own identity, or another CNI's eth0 beside berth's
 * net1) would otherwise take it over by replace, and the first would lose
 * it on the second's DEL. Such an interface routes the pool's CIDR
 * (poolCidr) via the gateway instead, as a secondary network should.
 */
export async function addressPod(host: Netlink, p: Plugged, a: { ip: string; gateway: string; poolCidr?: string }): Promise<Attachment> {
  const s = p.spec;
  const bridgeName = s.bridge ?? BRIDGE_NAME;
  try {
    // The pod's side and the host's side are independent: both at once.
    const [pod, hostSide] = await Promise.allSettled([
      withNetns(s.netns, async (pod) => {
        const eth = p.pod ?? await getLink(pod, s.ifName);
        if (!eth) throw new BerthError('KernelError', s.ifName, 'pod interface vanished');
        // A pair plugged by this ADD has no address yet: no need to list them first.
        await ensureAddress(pod, eth.index, `${a.ip}/32`, { fresh: !p.reused });
        const pre = p.routed;
        const dst = pre && pre.gateway === a.gateway && (pre.dst === '0.0.0.0/0' || pre.dst === a.poolCidr)
          ? pre.dst
          : await podRoute(pod, eth.index, s.ifName, { gateway: a.gateway, poolCidr: a.poolCidr });
        return [eth.mac!, dst] as const;
      }),
      (async () => {
        const bridgeIndex: LinkIndex = new Map([[bridgeName, p.bridgeIndex]]);
        await replaceRoute(host, bridgeIndex, { dst: `${a.ip}/32`, dev: bridgeName });
        // A restarted pod keeps its IP but not its MAC: drop the host's cached one.
        await deleteNeigh(host, bridgeIndex, { ip: a.ip, dev: bridgeName, mac: '' });
      })(),
    ]);
    if (pod.status === 'rejected') throw pod.reason;
    if (hostSide.status === 'rejected') throw hostSide.reason;
    const [mac, routeDst] = pod.value;
    return { hostVeth: p.hostVeth, hostMac: p.hostMac, mac, sandbox: s.netns, reused: p.reused, routeDst };
  } catch (e) {
    await deleteVeth(host, p.hostVeth).catch(() => undefined);
    throw e;
  }
}

/**
 * The pod's route via the gateway: the default route, unless another
 * interface of the pod has it (then just the pool's CIDR); returns its dst.
 */
async function podRoute(pod: Netlink, index: number, ifName: string, r: { gateway: string; poolCidr?: string }): Promise<string> {
  const defaultElsewhere = r.poolCidr !== undefined && await defaultRouteElsewhere(pod, index);
  const dst = defaultElsewhere ? r.poolCidr! : '0.0.0.0/0';
  const links: LinkIndex = new Map([[ifName, index]]);
  await replaceRoute(pod, links, { dst, dev: ifName, via: r.gateway, onlink: true }, { protocol: POD_ROUTE_PROTO });
  return dst;
}

export async function attachPod(host: Netlink, s: AttachSpec): Promise<Attachment> {
  return addressPod(host, await plugVeth(host, s), s);
}

export interface Detached {
  /** Resolves when the veth pair is deleted (never rejects). */
  gone: Promise<void>;
}

/**
 * Takes the pair out of service now (host side down and off the bridge; the
 * host route and neighbour when ip is given) and deletes it in the
 * background; idempotent. Down first: the released address may be handed to
 * another pod on this host before the old pair is gone.
 */
export async function detachPod(
  host: Netlink,
  s: { containerId: string; ifName: string; ip?: string; bridge?: string },
  onError: (e: unknown) => void = () => undefined,
): Promise<Detached> {
  const hostVeth = vethNameFor(s.containerId, s.ifName);
  const hv = await getLink(host, hostVeth);
  if (hv && (hv.up || hv.master)) {
    // Off the JS thread where possible: leaving the bridge waits for the kernel's RCU.
    const op = `retire ${hostVeth}`;
    const data: rt.Link = { index: hv.index, flags: {}, change: { up: true } };
    await nlGone(op, requestOffThread(host, op, linkRequest(RTM_SETLINK, data, { master: 0 })) ?? host.setLink(data, { master: 0 }));
  }
  if (s.ip) {
    const dev = s.bridge ?? BRIDGE_NAME;
    const links = await hostLinkIndex(host, dev);
    await deleteRoute(host, links, { dst: `${s.ip}/32`, dev });
    await deleteNeigh(host, links, { ip: s.ip, dev, mac: '' });
  }
  return { gone: hv ? reap(host, hostVeth, onError) : reaped(host, hostVeth) };
}
