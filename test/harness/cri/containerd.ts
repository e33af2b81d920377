/**
 * One containerd (Debian's 1.6 package) per simulated host, for the CRI e2e:
 * started in the host's network namespace (nsenter --net) so the pod network
 * it asks CNI for is the host's, with everything it owns under one temp dir: its gRPC socket,
 * root, state, the runc root, and a config.toml
 * whose CRI plugin uses this machine's settings (overlayfs, or native where
 * overlay mounts fail; cgroupfs, no systemd) and the locally built pause
 * image (image.ts) as sandbox_image; its CNI bin and conf dirs are the
 * caller's (the test's node root, where install-cni writes).
 *
 * What it creates outside that dir, and how stop() removes only that:
 * - pod netns, /var/run/netns/cni-<uuid> (the 1.6 default, as on a node):
 *   every sandbox's netns path is read from its verbose status as it is
 *   created (`track`), and whatever is left at stop() is unmounted and removed;
 * - shims and pause processes: their PIDs are read from the task bundles in
 *   the state dir (shim.pid, init.pid) and killed by PID; a shim's socket
 *   under /run/containerd/s/ (named in the bundle's `address`) is removed;
 * - cgroups: sandboxes run under a cgroup parent named for this instance,
 *   removed (leaf first) at stop().
 * stop() first stops and removes every sandbox through CRI, as kubelet would,
 * so the normal path is what normally runs; the kills are the backstop.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { eventually } from '../../../sim/eventually';
import { randomTag } from '../../../sim/netns';
import { CriClient } from './client';

export const PAUSE_IMAGE = 'docker.io/berth/pause:test';
export const NETNS_DIR = '/var/run/netns';
const SHIM_SOCKET_DIR = '/run/containerd/s';

export interface ContainerdOptions {
  /** The simulated host's netns name. */
  netns: string;
  dir: string;
  /** The OCI tarball of the sandbox image (image.ts). */
  pauseImage: string;
  snapshotter: 'overlayfs' | 'native';
  /** The CRI plugin's cni.bin_dir and cni.conf_dir (the node's /opt/cni/bin, /etc/cni/net.d). */
  binDir: string;
  confDir: string;
}

export interface Containerd {
  dir: string;
  socket: string;
  binDir: string;
  confDir: string;
  logFile: string;
  cgroupParent: string;
  cri: CriClient;
  pid: number;
  /** Records a sandbox's netns path (from its verbose status) so stop() can make sure it is gone. */
  track(sandboxId: string): Promise<string>;
  /** The netns paths of every sandbox tracked so far. */
  netnsPaths(): string[];
  /** Log lines (text) containerd wrote so far. */
  log(): string;
  stop(): Promise<void>;
}

function configToml(dir: string, o: ContainerdOptions): string {
  const q = (s: string) => JSON.stringify(s);
  return `version = 2
root = ${q(join(dir, 'root'))}
state = ${q(join(dir, 'state'))}
# Snapshotters this machine has no use for (and some fail to load here).
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]

[grpc]
  address = ${q(join(dir, 'containerd.sock'))}

[ttrpc]
  address = ${q(join(dir, 'containerd.ttrpc.sock'))}

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(join(dir, 'opt'))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(PAUSE_IMAGE)}
  disable_apparmor = true
  # The sandbox spec asks for oom_score_adj -998, which this machine's root may
  # not set (runc: "failed to update /proc/self/oom_score_adj: Permission
  # denied"); restricted, no container goes below containerd's own.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = ${q(o.snapshotter)}
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = ${q(join(dir, 'runc'))}
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(o.binDir)}
    conf_dir = ${q(o.confDir)}
`;
}

/** Which snapshotter works on this machine: overlayfs when an overlay mount succeeds, else native. */
export function pickSnapshotter(scratch: string): 'overlayfs' | 'native' {
  const d = join(scratch, 'overlay-probe');
  for (const s of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(join(d, s), { recursive: true });
  try {
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${d}/lower,upperdir=${d}/upper,workdir=${d}/work`, join(d, 'merged')], { stdio: 'ignore' });
    execFileSync('umount', [join(d, 'merged')], { stdio: 'ignore' });
    return 'overlayfs';
  } catch {
    return 'native';
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Cgroup directories named `name` under every mounted hierarchy (v1 controllers and the v2 one). */
function cgroupDirs(name: string): string[] {
  const out: string[] = [];
  let entries: string[] = [];
  try { entries = fs.readdirSync(CGROUP_ROOT); } catch { return out; }
  const candidates = [join(CGROUP_ROOT, name), ...entries.map((e) => join(CGROUP_ROOT, e, name))];
  for (const c of candidates) if (fs.existsSync(c)) out.push(c);
  return out;
}

/** rmdir a cgroup tree leaf first (cgroupfs directories can only be rmdir'ed once empty of children). */
function removeCgroupTree(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(dir, e.name));
  try { fs.rmdirSync(dir); } catch { /* still has tasks: reported by the caller's checks */ }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Removes a netns bind mount the way `ip netns delete` does (unmount, then unlink). */
function removeNetns(path: string): void {
  if (!fs.existsSync(path)) return;
  try { execFileSync('umount', ['--lazy', path], { stdio: 'ignore' }); } catch { /* not mounted */ }
  fs.rmSync(path, { force: true });
}

export async function startContainerd(o: ContainerdOptions): Promise<Containerd> {
  const dir = o.dir;
  const { binDir, confDir } = o;
  fs.mkdirSync(join(dir, 'runc'), { recursive: true });
  const configFile = join(dir, 'config.toml');
  fs.writeFileSync(configFile, configToml(dir, o));
  const socket = join(dir, 'containerd.sock');
  const logFile = join(dir, 'containerd.log');
  const cgroupParent = `/berth-cri-${randomTag()}`;
  const fd = fs.openSync(logFile, 'a');
  // nsenter, not `ip netns exec`: that one also enters a private mount
  // namespace with a fresh /sys, where runc finds no cgroup mount ("no cgroup
  // mount found in mountinfo") and the pod netns containerd bind-mounts under
  // /var/run/netns would not be seen outside. nsenter execs in place: this
  // PID is containerd's own.
  const child: ChildProcess = spawn('nsenter', [`--net=${join(NETNS_DIR, o.netns)}`, 'containerd', '--config', configFile], { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited = false;
  child.once('exit', () => { exited = true; });
  const log = () => { try { return fs.readFileSync(logFile, 'utf8'); } catch { return ''; } };
  const tail = () => log().split('\n').slice(-20).join('\n');
  const cri = new CriClient(socket);
  const tracked = new Map<string, string>();

  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= stopAll());
  const stopAll = async () => {
    // As kubelet would: stop and remove every sandbox (each DEL goes to the plugin).
    if (!exited) {
      try {
        for (const s of await cri.listPodSandbox()) {
          await track(s.id).catch(() => undefined);
          await cri.stopPodSandbox(s.id).catch(() => undefined);
          await cri.removePodSandbox(s.id).catch(() => undefined);
        }
      } catch { /* containerd not answering: the kills below */ }
    }
    cri.close();
    // The shims and sandbox processes this containerd started, from its task bundles.
    const tasks: { bundle: string; shim?: number; init?: number; address?: string }[] = [];
    const taskRoot = join(dir, 'state', 'io.containerd.runtime.v2.task');
    for (const ns of fs.existsSync(taskRoot) ? fs.readdirSync(taskRoot) : []) {
      for (const id of fs.readdirSync(join(taskRoot, ns))) {
        const bundle = join(taskRoot, ns, id);
        const num = (f: string) => { try { return Number(fs.readFileSync(join(bundle, f), 'utf8').trim()) || undefined; } catch { return undefined; } };
        let address: string | undefined;
        try { address = fs.readFileSync(join(bundle, 'address'), 'utf8').trim(); } catch { /* none */ }
        tasks.push({ bundle, shim: num('shim.pid'), init: num('init.pid'), address });
      }
    }
    if (!exited) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await gone;
      clearTimeout(timer);
    }
    for (const t of tasks) for (const pid of [t.init, t.shim]) if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    await eventually(() => {
      const left = tasks.flatMap((t) => [t.init, t.shim]).filter((p): p is number => p !== undefined && alive(p));
      if (left.length) throw new Error(`still alive: ${left.join(' ')}`);
    }, { timeoutMs: 10_000, what: 'shims and pause processes to exit' });
    for (const t of tasks) if (t.address?.startsWith('unix://')) fs.rmSync(t.address.slice('unix://'.length), { force: true });
    // The shims' socket dir (fixed in 1.6), if nothing else uses it: rmdir only removes it empty.
    for (const d of [SHIM_SOCKET_DIR, join(SHIM_SOCKET_DIR, '..')]) try { fs.rmdirSync(d); } catch { /* in use, or absent */ }
    for (const p of tracked.values()) removeNetns(p);
    for (const c of cgroupDirs(cgroupParent.slice(1))) removeCgroupTree(c);
  };

  const track = async (id: string) => {
    const known = tracked.get(id);
    if (known) return known;
    const st = await cri.podSandboxStatus(id);
    const info = JSON.parse(st.info.info ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } } };
    const path = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    if (!path) throw new Error(`sandbox ${id}: no network namespace path in its status`);
    tracked.set(id, path);
    return path;
  };

  try {
    await eventually(async () => {
      if (exited) throw new Error('containerd exited');
      if (!fs.existsSync(socket)) throw new Error('no socket yet');
      await cri.status();
    }, { timeoutMs: 30_000, intervalMs: 50, what: `containerd in ${o.netns} to serve CRI` });
    execFileSync('ctr', ['-a', socket, '-n', 'k8s.io', 'images', 'import', '--snapshotter', o.snapshotter, o.pauseImage], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    await stop().catch(() => undefined);
    throw new Error(`containerd did not start in ${o.netns}: ${(e as Error).message}\n${tail()}`);
  }
  return {
    dir, socket, binDir, confDir, logFile, cgroupParent, cri, pid: child.pid!, track,
    netnsPaths: () => [...tracked.values()], log, stop,
  };
}
