/**
 * The kernel side of the pod-to-pod fast path (agent --fast-path): owns the
 * two BPF maps, the two programs and their tcx links, and converges them to
 * a FastPathWant (agent/fastpath.ts) each reconcile pass. Everything here is
 * a plain bpf(2) syscall on the JS thread, which lives in the host netns;
 * none of them waits on the network.
 *
 * What the programs do, and why a miss always falls back to the kernel's
 * routes, is in agent/native/berth_bpf.c; the operator's view (what it
 * bypasses) is in docs/dataplane.md "Fast path".
 *
 * Map writes are ordered so that no packet can be redirected to the wrong
 * pod: CNI ADD points an address at its new veth before answering
 * (learnLocal), and DEL removes a veth's entries before the veth is retired
 * (forgetVeth), which also tombstones the veth: a pass that read the links
 * or the leases before the DEL can't point the address back at it. The
 * reconcile pass repairs everything else. The kernel is written before the
 * mirror, so a refused write leaves a difference the next pass still sees.
 */
import * as fs from 'node:fs';
import { BerthError } from '../../common/errors';
import { diffMap, type FastPathWant, type LocalPeer } from '../fastpath';
import { bpfAddon, type BpfAddon } from './netns';

/** More pods than one host runs, and more remote pods than a cluster would route through one host's view. */
const MAX_LOCAL = 4096;
const MAX_REMOTE = 262144;

const ip4 = (ip: string) => Buffer.from(ip.split('.').map(Number));
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

interface Attached {
  ifindex: number;
  /** veth name, or '' for berth.vxlan: an ifindex reused by another link must not look attached. */
  name: string;
  fd: number;
}

/** The loopback device's ifindex in every netns. */
const LOOPBACK_IFINDEX = 1;

export class FastPath {
  private readonly peers = new Map<string, LocalPeer>();
  /** remote pod ip -> "<vxlan ifindex>|<next hop>", exactly what its map value holds */
  private readonly remotes = new Map<string, string>();
  /**
   * Veths DEL has retired: never a target again, even for a pass that read
   * its links before the retirement. Cleared when the name is gone from the
   * host or an ADD plugs a new pair under it.
   */
  private readonly retired = new Set<string>();
  /** ingress link on berth.vxlan (key "vxlan") and egress links per veth (key = veth name) */
  private readonly links = new Map<string, Attached>();
  private closed = false;

  /** bpf is the native addon; tests pass an in-memory one. */
  private constructor(
    private readonly bpf: BpfAddon,
    private readonly fds: { peerMap: number; remoteMap: number; ingress: number; egress: number },
  ) {}

  /** Entries in the two maps as last written (metrics). */
  get sizes(): { local: number; remote: number } {
    return { local: this.peers.size, remote: this.remotes.size };
  }

  /**
   * Loads the programs; throws a BerthError naming why when the kernel can't
   * (no BPF, no tcx). sourceCheck (isolation, the default): the egress
   * program redirects only packets whose source is the veth's own pod.
   */
  static open(bpf: BpfAddon = bpfAddon(), o: { sourceCheck?: boolean } = {}): FastPath {
    const opened: number[] = [];
    try {
      const peerMap = bpf.bpfMapCreate(4, 4, MAX_LOCAL);
      opened.push(peerMap);
      const remoteMap = bpf.bpfMapCreate(4, 8, MAX_REMOTE);
      opened.push(remoteMap);
      const ingress = bpf.bpfLoadFastPath('ingress', peerMap);
      opened.push(ingress);
      const egress = o.sourceCheck === false ? bpf.bpfLoadFastPath('egress', remoteMap) : bpf.bpfLoadFastPath('egress', remoteMap, peerMap);
      opened.push(egress);
      // Kernels before 6.6 load the programs but have no tcx: find out now, not at every pass.
      fs.closeSync(bpf.tcxAttachIngress(ingress, LOOPBACK_IFINDEX));
      return new FastPath(bpf, { peerMap, remoteMap, ingress, egress });
    } catch (e) {
      for (const fd of opened) fs.closeSync(fd);
      throw new BerthError('KernelError', (e as Error).message, 'fast path unavailable');
    }
  }

  /**
   * Converges maps and attachments to want: how many changes it made, and
   * what the kernel refused (a veth gone since want was computed: the next
   * pass settles it).
   */
  sync(want: FastPathWant): { ops: number; failed: string[] } {
    const failed: string[] = [];
    if (this.closed) return { ops: 0, failed };
    let ops = 0;
    for (const veth of this.retired) if (!want.present.has(veth)) this.retired.delete(veth);
    const wantPeers = new Map([...want.peers].filter(([, p]) => !this.retired.has(p.veth)));
    // Maps first, then attachments: a program never runs against entries older than its hook.
    const peers = diffMap(wantPeers, this.peers, (a, b) => a.index === b.index && a.veth === b.veth);
    for (const ip of peers.del) ops += this.dropPeer(ip);
    for (const [ip, p] of peers.set) ops += this.setPeer(ip, p);
    const wantRemotes = new Map<string, string>();
    if (want.vxlan !== undefined) for (const [ip, nh] of want.remotes) wantRemotes.set(ip, `${want.vxlan}|${nh}`);
    const remotes = diffMap(wantRemotes, this.remotes, (a, b) => a === b);
    for (const ip of remotes.del) {
      this.bpf.bpfMapDelete(this.fds.remoteMap, ip4(ip));
      this.remotes.delete(ip);
      ops++;
    }
    for (const [ip, value] of remotes.set) {
      const [vxlan, nh] = value.split('|');
      this.bpf.bpfMapUpdate(this.fds.remoteMap, ip4(ip), Buffer.concat([u32(Number(vxlan)), ip4(nh)]));
      this.remotes.set(ip, value);
      ops++;
    }
    const tryAttach = (key: string, name: string, index: number | undefined, prog: number) => {
      try {
        ops += this.attach(key, name, index, prog);
      } catch (e) {
        failed.push(`attach ${key}: ${(e as Error).message}`);
      }
    };
    tryAttach('vxlan', '', want.vxlan, this.fds.ingress);
    const veths = new Map([...wantPeers.values()].map((p) => [p.veth, p.index]));
    for (const [key] of this.links) if (key !== 'vxlan' && !veths.has(key)) ops += this.detach(key);
    for (const [veth, index] of veths) tryAttach(veth, veth, index, this.fds.egress);
    return { ops, failed };
  }

  /** CNI ADD: ip now lives behind this veth, from this moment (the pass would get there later). */
  learnLocal(ip: string, veth: string, index: number): void {
    if (this.closed) return;
    this.retired.delete(veth);
    if (this.remotes.has(ip)) {
      this.bpf.bpfMapDelete(this.fds.remoteMap, ip4(ip));
      this.remotes.delete(ip);
    }
    this.setPeer(ip, { index, veth });
    this.attach(veth, veth, index, this.fds.egress);
  }

  /** CNI DEL/GC: nothing may be redirected into this veth any more. */
  forgetVeth(veth: string): void {
    if (this.closed) return;
    this.retired.add(veth);
    for (const [ip, p] of this.peers) if (p.veth === veth) this.dropPeer(ip);
    this.detach(veth);
  }

  /** Detaches everything (closing a link fd detaches its program) and frees the maps. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const key of [...this.links.keys()]) this.detach(key);
    for (const fd of Object.values(this.fds)) fs.closeSync(fd);
  }

  /** For tests and logs. */
  stats(): { peers: number; remotes: number; links: number; retired: number } {
    return { peers: this.peers.size, remotes: this.remotes.size, links: this.links.size, retired: this.retired.size };
  }

  private setPeer(ip: string, p: LocalPeer): number {
    this.bpf.bpfMapUpdate(this.fds.peerMap, ip4(ip), u32(p.index));
    this.peers.set(ip, p);
    return 1;
  }

  private dropPeer(ip: string): number {
    this.bpf.bpfMapDelete(this.fds.peerMap, ip4(ip));
    this.peers.delete(ip);
    return 1;
  }

  private attach(key: string, name: string, ifindex: number | undefined, prog: number): number {
    const cur = this.links.get(key);
    if (cur && cur.ifindex === ifindex && cur.name === name) return 0;
    const ops = cur ? this.detach(key) : 0;
    if (ifindex === undefined) return ops;
    const fd = this.bpf.tcxAttachIngress(prog, ifindex);
    this.links.set(key, { ifindex, name, fd });
    return ops + 1;
  }

  private detach(key: string): number {
    const cur = this.links.get(key);
    if (!cur) return 0;
    fs.closeSync(cur.fd);
    this.links.delete(key);
    return 1;
  }
}
