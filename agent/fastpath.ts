/**
 * Pure: what the pod-to-pod fast path (agent --fast-path) should hold, from
 * the desired state and the host's links (name -> ifindex). The kernel side
 * is agent/kernel/fastpath.ts; the programs are agent/native/berth_bpf.c.
 *
 *   ingress program on berth.vxlan, map: local pod ip -> its host veth
 *   egress program on each local host veth, map: remote pod ip -> owner's underlay
 *
 * Only pods whose veth exists are listed, and only remote pods that have a
 * route: the fast path shortcuts the routes, it never knows more than they do.
 */
import { BRIDGE_NAME, VXLAN_NAME, type Desired } from './desired';

/** What the fast path needs to know of one host link. */
export interface LinkView {
  name: string;
  index: number;
  up?: boolean;
  /** ifindex of the link's master (the bridge a veth is a port of). */
  master?: number;
}

export interface LocalPeer {
  /** ifindex of the host-side veth. */
  index: number;
  veth: string;
}

export interface FastPathWant {
  /** berth.vxlan's ifindex; undefined while it doesn't exist. */
  vxlan?: number;
  /** Every link name on the host, in service or not (retired veths included). */
  present: Set<string>;
  /** local pod ip -> its host veth */
  peers: Map<string, LocalPeer>;
  /** remote pod ip -> the owning host's underlay address */
  remotes: Map<string, string>;
}

/**
 * A veth counts only while it is in service: up and a port of berth0. DEL
 * retires a veth (down, off the bridge) before deleting it in the
 * background, and a pass working from a view that still shows the lease
 * bound must not point the address back at it.
 */
export function fastPathWant(d: Desired, links: readonly LinkView[]): FastPathWant {
  const byName = new Map(links.map((l) => [l.name, l]));
  const bridge = byName.get(BRIDGE_NAME)?.index;
  const peers = new Map<string, LocalPeer>();
  for (const l of d.locals ?? []) {
    const v = byName.get(l.veth);
    if (v && v.up && bridge !== undefined && v.master === bridge) peers.set(l.ip, { index: v.index, veth: l.veth });
  }
  const remotes = new Map<string, string>();
  for (const r of d.routes) {
    if (r.dev !== VXLAN_NAME || !r.via || !r.dst.endsWith('/32')) continue;
    remotes.set(r.dst.slice(0, -3), r.via);
  }
  return { vxlan: byName.get(VXLAN_NAME)?.index, present: new Set(byName.keys()), peers, remotes };
}

export interface MapDiff<V> {
  set: [string, V][];
  del: string[];
}

/** Entries to write and keys to delete so that `have` becomes `want`. */
export function diffMap<V>(want: ReadonlyMap<string, V>, have: ReadonlyMap<string, V>, same: (a: V, b: V) => boolean): MapDiff<V> {
  const set: [string, V][] = [];
  for (const [k, v] of want) {
    const h = have.get(k);
    if (h === undefined || !same(h, v)) set.push([k, v]);
  }
  const del = [...have.keys()].filter((k) => !want.has(k));
  return { set, del };
}
