/**
 * A whole Berth cluster on one machine, for integration tests, benchmarks
 * and the demo: a real etcd, a real controller, N simulated hosts (network
 * namespaces on one underlay bridge, sim/netns.ts) and one real
 * `berth-agent` process per host, started with `ip netns exec` exactly as
 * an operator would start it on a node. Nothing runs in or changes the
 * root network namespace: agents reach etcd and the controller over unix
 * sockets, which are not scoped to a namespace.
 *
 *   const c = await startCluster({ hosts: 3, poolCidr: '198.18.0.0/24' });
 *   t.teardown(() => c.teardown());
 *   const a = await c.plumbPod(c.hosts[0], 'web-1');      // bind + veth, as CNI ADD would
 *   const b = await c.plumbPod(c.hosts[1], 'web-2');
 *   await c.waitConverged();                               // every agent's kernel == desired
 *   c.ping(a.ns, b.ip);                                    // true when reachable
 *   await c.restartAgent(c.hosts[0]);                      // SIGTERM, start again, wait ready
 *
 * API (all of it):
 *   startCluster(opts)          ClusterOptions: hosts, poolCidr, hold? (pool holdSeconds), poolName?,
 *                               resyncMs?, hostTtlSeconds?, hostDeadAfterSeconds? (controller), agentEnv?
 *   Cluster fields              etcd (EtcdServer), controller (RunningController; .metricsUrl is a unix:// socket), client
 *                               (ControllerClient over the controller's unix socket), controllerUrl
 *                               ('unix:///…'), lab (Lab), pool ({name,cidr,gateway}), hosts, dir
 *   ClusterHost                 name, sim (SimHost: netns name/path, underlayIp, dev), dir,
 *                               socket (<dir>/<host>/agent.sock: the CNI socket), journalDir,
 *                               logFile (agent stderr: JSON lines), pid (undefined while stopped),
 *                               metricsUrl ('unix:///…/metrics.sock': the agent's --metrics-listen)
 *   host(nameOrIndex)           look a host up
 *   startAgent(h, {args?, noWait?, controllerUrl?}) / stopAgent(h, signal='SIGTERM') / restartAgent(h)
 *                               process control by PID; start resolves once the agent's CNI socket exists
 *                               (noWait: as soon as the process is spawned; controllerUrl: instead of the cluster's)
 *   logs(h, msg?)               parsed JSON log lines of h's agent (optionally only msg === …)
 *   waitLog(h, pred, opts?)     bounded wait for a log line (only lines after `fromLine` if given)
 *   waitConverged(opts?)        bounded wait until, on every running agent's host, the kernel
 *                               matches desiredState(etcd) (same pure functions the agent uses)
 *   plumbPod(h, identity, o?)   bind through the controller (host = h) and attach a veth in a
 *                               fresh pod netns with agent/kernel/pod.ts: the CNI ADD path
 *                               without the plugin. Returns Pod {ns, ip, identity, containerId, host}
 *   unplumbPod(pod)             release (fenced by containerId) and detach: the CNI DEL path
 *   ping(fromNs, ip)            one ICMP echo, true when answered
 *   hostNetlink(h)              a netlink socket inside h's namespace (owned by the cluster)
 *   teardown()                  kills every agent by PID, stops controller and etcd, deletes
 *                               every namespace and the temp dir; safe to call twice
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isBerthError } from '../common/errors';
import { keys } from '../common/keys';
import { ControllerClient } from '../common/controller-client';
import { silentLogger } from '../common/log';
import type { Host, Lease, LeaseView } from '../common/records';
import { startController, type RunningController } from '../controller/app';
import { desiredState, overlayMtu, vtepMacFor } from '../agent/desired';
import { attachPod, detachPod, observe, openNetlinkIn, warmThreadPool, type Netlink } from '../agent/kernel';
import { planChanges } from '../agent/plan';
import { startEtcd, type EtcdServer } from './etcd';
import { eventually } from './eventually';
import { Lab, UNDERLAY_MTU, nsTry, randomTag, type Netns, type SimHost } from './netns';

/** dist/sim/cluster.js -> dist/agent/main.js */
export const AGENT_MAIN = path.join(__dirname, '../agent/main.js');

export interface ClusterOptions {
  hosts: number;
  /** e.g. '198.18.0.0/24'; the gateway is the first address. */
  poolCidr: string;
  /** holdSeconds of the pool: how long a released address stays with its identity. */
  hold?: number;
  poolName?: string;
  resyncMs?: number;
  hostTtlSeconds?: number;
  /** The controller's --host-dead-after (default 300 s): absence before a host is declared dead. */
  hostDeadAfterSeconds?: number;
  /** Extra environment for agent processes (e.g. BERTH_LOG_LEVEL). */
  agentEnv?: Record<string, string>;
}

export interface ClusterHost {
  name: string;
  sim: SimHost;
  dir: string;
  socket: string;
  journalDir: string;
  logFile: string;
  pid: number | undefined;
  metricsUrl: string;
}

export interface Pod {
  ns: Netns;
  ip: string;
  identity: string;
  containerId: string;
  host: string;
  lease: LeaseView;
}

export interface LogLine {
  msg: string;
  level: string;
  [k: string]: unknown;
}

export interface Cluster {
  etcd: EtcdServer;
  controller: RunningController;
  controllerUrl: string;
  client: ControllerClient;
  lab: Lab;
  pool: { name: string; cidr: string; gateway: string };
  hosts: ClusterHost[];
  dir: string;
  host(h: string | number): ClusterHost;
  /**
   * args: extra agent flags for this start (e.g. a second --controller); main: another agent main.js (a packaged tree's);
   * wrap: a command the agent runs under (e.g. setpriv with a capability set), before node; controllerUrl: another controller for this start.
   */
  startAgent(h: ClusterHost, o?: { args?: string[]; noWait?: boolean; main?: string; wrap?: string[]; controllerUrl?: string }): Promise<void>;
  stopAgent(h: ClusterHost, signal?: NodeJS.Signals): Promise<void>;
  restartAgent(h: ClusterHost): Promise<void>;
  logs(h: ClusterHost, msg?: string): LogLine[];
  waitLog(h: ClusterHost, pred: (l: LogLine) => boolean, o?: { fromLine?: number; timeoutMs?: number }): Promise<LogLine>;
  waitConverged(o?: { timeoutMs?: number; hosts?: ClusterHost[] }): Promise<void>;
  plumbPod(h: ClusterHost, identity: string, o?: { ip?: string; label?: string }): Promise<Pod>;
  unplumbPod(pod: Pod): Promise<void>;
  ping(from: Netns, ip: string): boolean;
  hostNetlink(h: ClusterHost): Netlink;
  teardown(): Promise<void>;
}

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  await warmThreadPool();
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'berth-cluster-'));
  const lab = new Lab();
  const procs = new Map<string, ChildProcess>();
  const sockets = new Map<string, Netlink>();
  let etcd: EtcdServer | undefined;
  let controller: RunningController | undefined;
  let client: ControllerClient | undefined;
  let torn = false;

  const teardown = async () => {
    if (torn) return;
    torn = true;
    await Promise.all([...procs.keys()].map((name) => stop(name, 'SIGTERM')));
    for (const s of sockets.values()) s.socket.close();
    sockets.clear();
    client?.close();
    await controller?.stop().catch(() => undefined);
    await etcd?.stop().catch(() => undefined);
    lab.teardown();
    fs.rmSync(dir, { recursive: true, force: true });
  };

  async function stop(name: string, signal: NodeJS.Signals): Promise<void> {
    const child = procs.get(name);
    procs.delete(name);
    const h = hosts.find((x) => x.name === name);
    if (h) h.pid = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    const timer = setTimeout(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); }, 5000);
    await exited;
    clearTimeout(timer);
  }

  const hosts: ClusterHost[] = [];
  try {
    etcd = await startEtcd();
    const controllerUrl = `unix://${path.join(dir, 'controller.sock')}`;
    controller = await startController({
      etcd: { endpoints: [etcd.endpoint] }, listen: ['127.0.0.1:0', controllerUrl], log: silentLogger,
      metricsListen: `unix://${path.join(dir, 'controller-metrics.sock')}`,
      ...(o.hostDeadAfterSeconds !== undefined ? { hostDeadAfterSeconds: o.hostDeadAfterSeconds } : {}),
    });
    client = new ControllerClient({ url: controller.url });
    const poolName = o.poolName ?? 'default';
    const created = await client.createPool({ name: poolName, cidr: o.poolCidr, ...(o.hold !== undefined ? { holdSeconds: o.hold } : {}) });
    const pool = { name: created.name, cidr: created.cidr, gateway: created.gateway };

    for (let i = 1; i <= o.hosts; i++) {
      const name = `host-${i}`;
      const hdir = path.join(dir, name);
      fs.mkdirSync(path.join(hdir, 'del-journal'), { recursive: true });
      hosts.push({
        name, sim: lab.host(`h${i}`), dir: hdir, socket: path.join(hdir, 'agent.sock'),
        journalDir: path.join(hdir, 'del-journal'), logFile: path.join(hdir, 'agent.log'), pid: undefined,
        metricsUrl: `unix://${path.join(hdir, 'metrics.sock')}`,
      });
    }

    const logs = (h: ClusterHost, msg?: string): LogLine[] => {
      let text = '';
      try { text = fs.readFileSync(h.logFile, 'utf8'); } catch { return []; }
      const out: LogLine[] = [];
      for (const line of text.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const l = JSON.parse(line) as LogLine;
          if (msg === undefined || l.msg === msg) out.push(l);
        } catch { /* a line being written */ }
      }
      return out;
    };
    const tail = (h: ClusterHost) => {
      try { return fs.readFileSync(h.logFile, 'utf8').split('\n').slice(-15).join('\n'); } catch { return ''; }
    };

    const startAgent = async (h: ClusterHost, so: { args?: string[]; noWait?: boolean; main?: string; wrap?: string[]; controllerUrl?: string } = {}) => {
      if (procs.has(h.name)) throw new Error(`agent on ${h.name} is already running`);
      // The agent opens its CNI socket last, after the first reconcile pass:
      // the socket appearing is the readiness signal (independent of log level).
      fs.rmSync(h.socket, { force: true });
      const fd = fs.openSync(h.logFile, 'a');
      const env: NodeJS.ProcessEnv = { ...process.env, ...o.agentEnv };
      delete env.NODE_EXTRA_CA_CERTS; // ~80 ms per start, and real nodes don't have it
      const args = [
        'netns', 'exec', h.sim.name, ...(so.wrap ?? []), process.execPath, ...(process.env.BERTH_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', process.env.BERTH_PROF_DIR] : []), so.main ?? AGENT_MAIN,
        '--etcd-endpoints', etcd!.socketEndpoint, '--controller', so.controllerUrl ?? controllerUrl, '--host', h.name,
        '--underlay-ip', h.sim.underlayIp, '--underlay-dev', h.sim.dev, '--pool', poolName, '--socket', h.socket,
        '--journal-dir', h.journalDir, '--resync-ms', String(o.resyncMs ?? 10_000), '--host-ttl', String(o.hostTtlSeconds ?? 10),
        '--metrics-listen', h.metricsUrl, ...(so.args ?? []),
      ];
      // `ip netns exec` execs node in place, so this PID is the agent's own.
      const child = spawn('ip', args, { stdio: ['ignore', fd, fd], env });
      fs.closeSync(fd);
      procs.set(h.name, child);
      h.pid = child.pid;
      let exited = false;
      child.once('exit', () => { exited = true; });
      if (so.noWait) return;
      await eventually(() => {
        if (exited) throw new Error(`agent on ${h.name} exited: ${tail(h)}`);
        if (!fs.existsSync(h.socket)) throw new Error('not ready');
      }, { timeoutMs: 20_000, what: `agent on ${h.name} to be ready` }).catch((e) => {
        if (exited) procs.delete(h.name);
        throw new Error(`${(e as Error).message}\n${tail(h)}`);
      });
    };

    const hostNetlink = (h: ClusterHost) => {
      let s = sockets.get(h.name);
      if (!s) {
        s = openNetlinkIn(h.sim.path);
        sockets.set(h.name, s);
      }
      return s;
    };

    /** Reads hosts and the pool's leases from etcd at one revision. */
    const readCluster = async (): Promise<{ hosts: Host[]; leases: LeaseView[] }> => {
      const c = etcd!.client();
      const hs = await c.getAll().prefix(keys.hostPrefix).exec();
      const ls = await c.getAll().prefix(keys.poolLeasePrefix(poolName)).revision(hs.header.revision).exec();
      return {
        hosts: hs.kvs.map((kv) => JSON.parse(kv.value.toString()) as Host),
        leases: ls.kvs.map((kv) => ({ ...(JSON.parse(kv.value.toString()) as Lease), revision: String(kv.mod_revision) })),
      };
    };

    const waitConverged = async (w: { timeoutMs?: number; hosts?: ClusterHost[] } = {}) => {
      const targets = w.hosts ?? hosts.filter((h) => procs.has(h.name));
      await eventually(async () => {
        const view = await readCluster();
        for (const h of targets) {
          const me: Host = { name: h.name, underlayIp: h.sim.underlayIp, vtepMac: vtepMacFor(h.name), vni: 4242, pool: poolName, registeredAt: '' };
          const desired = desiredState({
            self: h.name, hosts: [me, ...view.hosts.filter((x) => x.name !== h.name)], leases: view.leases, pool, underlayMtu: UNDERLAY_MTU,
          });
          const ops = planChanges(desired, await observe(hostNetlink(h)));
          if (ops.length) throw new Error(`${h.name}: ${ops.length} ops pending, e.g. ${JSON.stringify(ops[0])}`);
        }
      }, { timeoutMs: w.timeoutMs ?? 15_000, intervalMs: 25, what: 'agents to converge' });
    };

    const plumbPod = async (h: ClusterHost, identity: string, p: { ip?: string; label?: string } = {}): Promise<Pod> => {
      const containerId = `ctr-${randomTag(6)}`;
      // Retryable refusals (CNI code 11) are retried briefly, as a runtime would: right
      // after a release the controller's view can still show the old binding.
      const bind = await eventually(async () => {
        try {
          return { ok: await client!.bind(poolName, { identity, host: h.name, containerId, ifName: 'eth0', ...(p.ip ? { ip: p.ip } : {}) }) };
        } catch (e) {
          if (isBerthError(e) && e.retryable) throw e;
          return { error: e };
        }
      }, { timeoutMs: 5000, intervalMs: 10, what: `bind ${identity} on ${h.name}` }).then((r) => {
        if ('error' in r) throw r.error;
        return r.ok;
      });
      const ns = lab.pod(p.label ?? 'pod');
      await attachPod(hostNetlink(h), {
        containerId, ifName: 'eth0', netns: ns.path, ip: bind.lease.ip, gateway: bind.gateway, mtu: overlayMtu(UNDERLAY_MTU),
      });
      return { ns, ip: bind.lease.ip, identity, containerId, host: h.name, lease: bind.lease };
    };

    const unplumbPod = async (pod: Pod) => {
      await client!.release(poolName, { identity: pod.identity, containerId: pod.containerId });
      const h = hosts.find((x) => x.name === pod.host)!;
      await (await detachPod(hostNetlink(h), { containerId: pod.containerId, ifName: 'eth0', ip: pod.ip })).gone;
    };

    const cluster: Cluster = {
      etcd, controller, controllerUrl, client, lab, pool, hosts, dir,
      host: (x) => (typeof x === 'number' ? hosts[x] : hosts.find((h) => h.name === x)!),
      startAgent,
      stopAgent: (h, signal = 'SIGTERM') => stop(h.name, signal),
      restartAgent: async (h) => { await stop(h.name, 'SIGTERM'); await startAgent(h); },
      logs,
      waitLog: (h, pred, w = {}) => eventually(() => {
        const l = logs(h).slice(w.fromLine ?? 0).find(pred);
        if (!l) throw new Error(`no matching log line from ${h.name}`);
        return l;
      }, { timeoutMs: w.timeoutMs ?? 10_000, what: `a log line from ${h.name}` }),
      waitConverged, plumbPod, unplumbPod,
      ping: (from, ip) => nsTry(from, 'ping', '-c1', '-W1', '-q', ip),
      hostNetlink,
      teardown,
    };
    await Promise.all(hosts.map((h) => startAgent(h)));
    return cluster;
  } catch (e) {
    await teardown();
    throw e;
  }
}
