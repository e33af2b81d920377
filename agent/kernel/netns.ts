/**
 * The only module that enters network namespaces. Everything else gets a
 * netlink socket (or a namespace fd) from here and never calls setns itself.
 *
 * A netlink socket belongs to the namespace it was opened in, for its whole
 * life. So to program a pod we setns the JS main thread into the pod's netns,
 * open a socket, and setns straight back - all synchronously, so no other JS
 * (and no libuv callback) ever runs while the thread is elsewhere. The rules
 * that keep this safe are in agent/README-netns.md and docs/netns.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RawNetlinkSocket, createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { BerthError } from '../../common/errors';
import { KernelError, errnoName } from './nl';
import { NETLINK_NETFILTER } from '../nft-setelem';

interface Addon {
  /** fd of a network namespace file; never blocks; throws code ENOENT or ENOTNETNS (berth_netns.c). */
  openNetns(path: string): number;
  setns(fd: number, nstype: number): void;
  CLONE_NEWNET: number;
  /** A NETLINK_ROUTE socket fd in the calling thread's netns (O_CLOEXEC). */
  routeSocket(): number;
  /** RTM_DELLINK by name on fd, from a libuv pool thread; closes fd. false: no such link. */
  deleteLinkOn(fd: number, name: string): Promise<boolean>;
  /** One whole rtnetlink request on fd, from a libuv pool thread; resolves on its ACK, rejects with the errno as code; closes fd. */
  requestOn(fd: number, message: Buffer): Promise<void>;
}

/** dist/agent/kernel/netns.js -> <repo>/agent/native/build/Release. */
export const ADDON_PATH =
  process.env.BERTH_NETNS_ADDON ?? path.join(__dirname, '../../../agent/native/build/Release/berth_netns.node');

/** The fast path's calls (agent/native/berth_bpf.c); used by kernel/fastpath.ts only. */
export interface BpfAddon {
  bpfMapCreate(keySize: number, valueSize: number, maxEntries: number): number;
  bpfMapUpdate(fd: number, key: Buffer, value: Buffer): void;
  bpfMapDelete(fd: number, key: Buffer): boolean;
  bpfLoadFastPath(kind: 'ingress' | 'egress', mapFd: number, peerMapFd?: number): number;
  tcxAttachIngress(progFd: number, ifindex: number): number;
}

let addon: (Addon & BpfAddon) | undefined;
function load(): Addon & BpfAddon {
  if (!addon) {
    try {
      addon = require(ADDON_PATH) as Addon & BpfAddon;
    } catch (e) {
      throw new BerthError('Internal', `${ADDON_PATH}: ${(e as Error).message}`, 'netns addon not built (run npm run build)');
    }
  }
  return addon;
}

export function bpfAddon(): BpfAddon {
  return load();
}

let warmed = false;

/**
 * libuv starts its thread pool on the first async fs/dns call, and a thread
 * inherits the namespace of the thread that creates it. Starting it here, in
 * our own netns, keeps pool threads from being born inside a pod's netns.
 */
export async function warmThreadPool(): Promise<void> {
  if (warmed) return;
  await fs.promises.stat('/proc/self/ns/net');
  warmed = true;
}

/** Accepts /var/run/netns/NAME, /run/netns/NAME, /proc/PID/ns/net or a bare NAME. */
export function resolveNetnsPath(p: string): string {
  if (!p) throw new BerthError('InvalidRequest', p, 'empty netns path');
  return p.includes('/') ? p : `/run/netns/${p}`;
}

/**
 * Opens a namespace fd (for IFLA_NET_NS_FD, or setns). The caller closes it;
 * it is O_CLOEXEC, so it never leaks into a child process. A path that is
 * not a network namespace (a FIFO, a device, a directory, a regular file,
 * another kind of namespace) is refused before it is opened for reading,
 * and nothing here can block: a FIFO once froze the whole agent in open(2).
 */
export function openNetnsFd(nsPath: string): number {
  const p = resolveNetnsPath(nsPath);
  try {
    return load().openNetns(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BerthError('NotFound', p, 'network namespace does not exist');
    if (code === 'ENOTNETNS') throw new BerthError('InvalidRequest', p, 'not a network namespace');
    throw new BerthError('IO', `${p}: ${(e as Error).message}`);
  }
}

/** Same inode and device as /proc/self/ns/net: the path names our own netns. */
export function isOwnNetns(nsPath: string): boolean {
  const a = fs.statSync(resolveNetnsPath(nsPath));
  const b = fs.statSync('/proc/thread-self/ns/net');
  return a.ino === b.ino && a.dev === b.dev;
}

/**
 * Runs fn with the main thread inside nsPath's netns, then moves back.
 * Synchronous on purpose: between the two setns calls nothing else may run
 * (no await, no Worker, no child process), and fn must be synchronous too.
 * Private: callers get sockets or sysctl writes, never a raw "inside" window.
 */
function enterSync<T>(nsPath: string, fn: () => T): T {
  // Refuse rather than warm here: the mistake is silent and bites much later.
  if (!warmed) throw new BerthError('Internal', 'call warmThreadPool() before entering a netns', 'thread pool not warmed');
  const { setns, CLONE_NEWNET } = load();
  const own = fs.openSync('/proc/thread-self/ns/net', fs.constants.O_RDONLY);
  let target: number | undefined;
  try {
    target = openNetnsFd(nsPath);
    try {
      setns(target, CLONE_NEWNET);
    } catch (e) {
      if ((e as { code?: string }).code === 'EINVAL') {
        throw new BerthError('InvalidRequest', resolveNetnsPath(nsPath), 'not a network namespace');
      }
      throw e;
    }
    try {
      return fn();
    } finally {
      // If this fails the process is in the wrong netns for good: crash loudly.
      try {
        setns(own, CLONE_NEWNET);
      } catch (e) {
        process.stderr.write(`berth: cannot return to own netns: ${(e as Error).message}\n`);
        process.abort();
      }
    }
  } finally {
    if (target !== undefined) fs.closeSync(target);
    fs.closeSync(own);
  }
}

/**
 * Where each socket handed out here lives: a path, or OWN_NETNS. Lets work
 * that needs a second socket in the same netns (deleteLinkOffThread) find it.
 */
const OWN_NETNS = '';
const socketNetns = new WeakMap<RtNetlinkSocket, string>();

/** Opens an rtnetlink socket that lives (for good) in nsPath's namespace. */
export function openNetlinkIn(nsPath: string): RtNetlinkSocket {
  const sock = enterSync(nsPath, () => createRtNetlink());
  socketNetns.set(sock, nsPath);
  return sock;
}

/** Where sock lives: a netns path, '' for our own, undefined for a socket not opened here. */
export function netnsOf(sock: RtNetlinkSocket): string | undefined {
  return socketNetns.get(sock);
}

/**
 * Deletes link `name` in the netns of `sock`, from a libuv pool thread.
 * The kernel runs a netlink request inside the sender's sendmsg(2), and
 * deleting a veth waits out RCU grace periods there (15-25 ms measured):
 * sent on a shared socket from the JS thread, that would stall every other
 * CNI request and the reconciler. Resolves false when there is no such link.
 * Returns undefined for a socket not opened here (its netns is unknown):
 * the caller deletes through the socket instead.
 */
export function deleteLinkOffThread(sock: RtNetlinkSocket, name: string): Promise<boolean> | undefined {
  const ns = socketNetns.get(sock);
  if (ns === undefined) return undefined;
  const a = load();
  const fd = ns === OWN_NETNS ? a.routeSocket() : enterSync(ns, () => a.routeSocket());
  return a.deleteLinkOn(fd, name);
}

/**
 * Sends one whole rtnetlink request (nlRequest) in the netns of `sock`
 * from a libuv pool thread, for the same reason as deleteLinkOffThread:
 * creating a veth pair runs for milliseconds inside sendmsg(2), and on the
 * JS thread that would stall every concurrent CNI request. Returns
 * undefined for a socket not opened here: the caller sends it itself.
 */
export function requestOffThread(sock: RtNetlinkSocket, op: string, message: Buffer): Promise<void> | undefined {
  const ns = socketNetns.get(sock);
  if (ns === undefined) return undefined;
  const a = load();
  const fd = ns === OWN_NETNS ? a.routeSocket() : enterSync(ns, () => a.routeSocket());
  return a.requestOn(fd, message).catch((e: { code?: string; errno?: number }) => {
    throw new KernelError(errnoName(e.errno) ?? (e.code && /^E[A-Z0-9]+$/.test(e.code) ? e.code : 'EIO'), op);
  });
}

/**
 * Writes a net sysctl (e.g. "net/ipv4/ip_forward") in nsPath's netns, or in
 * our own when nsPath is undefined. /proc/sys/net follows the netns of the
 * thread that opens it, hence the synchronous write inside the window.
 */
export function writeSysctl(nsPath: string | undefined, key: string, value: string): void {
  const write = () => fs.writeFileSync(sysctlPath(key), value);
  if (nsPath === undefined) write();
  else enterSync(nsPath, write);
}

/** Opens a NETLINK_NETFILTER socket that lives (for good) in nsPath's namespace. */
export function openNetfilterSocketIn(nsPath: string): RawNetlinkSocket {
  return enterSync(nsPath, () => new RawNetlinkSocket(NETLINK_NETFILTER));
}

/** Reads a net sysctl in our own netns (through the same directory writeSysctl uses). */
export function readSysctl(key: string): string {
  return fs.readFileSync(sysctlPath(key), 'utf8').trim();
}

/**
 * Where net sysctls are: /proc/sys/net, or (agent --proc-sys-net) the host's
 * /proc/sys/net mounted writable elsewhere, because a container that is not
 * privileged gets /proc/sys read-only. Either way a file there follows the
 * netns of the thread that opens it.
 */
let procSysNet = '/proc/sys/net';
export function useProcSysNet(dir: string): void {
  procSysNet = dir.replace(/\/+$/, '');
}

function sysctlPath(key: string): string {
  if (!/^net\/[a-z0-9_./-]+$/.test(key) || key.includes('..')) throw new BerthError('InvalidRequest', key, 'not a net sysctl');
  return `${procSysNet}/${key.slice('net/'.length)}`;
}

/** Opens a socket in our own namespace (no setns involved). */
export function openNetlink(): RtNetlinkSocket {
  const sock = createRtNetlink();
  socketNetns.set(sock, OWN_NETNS);
  return sock;
}

/**
 * Runs fn with a netlink socket inside nsPath and closes the socket after.
 * fn may await freely: only the socket is in the pod's netns, not the thread.
 */
export async function withNetns<T>(nsPath: string, fn: (nl: RtNetlinkSocket) => Promise<T>): Promise<T> {
  await warmThreadPool();
  const nl = openNetlinkIn(nsPath);
  try {
    return await fn(nl);
  } finally {
    nl.socket.close();
  }
}
