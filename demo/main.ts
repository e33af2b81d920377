/**
 * `npm run demo`: Berth's promise, end to end, on one machine.
 *
 * etcd + a controller + N simulated hosts (network namespaces on an underlay
 * bridge in 198.19.0.0/24, each running its own berth-agent), pods created
 * by exec'ing the installed `berth` CNI plugin exactly as a runtime does,
 * then: cross-host pings, a pod restarted on the same host (same IP), a pod
 * moved to another host (same IP, reachable from everywhere), the lease table
 * and history. Everything is torn down at the end, on Ctrl-C, or on failure.
 * Nothing touches the machine's root namespace or leaves the namespaces.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { startCluster, type Cluster, type ClusterHost } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import type { Netns } from '../sim/netns';
import { ip, nsExec } from '../sim/netns';
import { CniRuntime, type Attachment } from './runtime';

const ROOT = join(__dirname, '../..');
const PLUGIN = join(ROOT, 'dist/bin/berth');
const BERTHCTL = join(ROOT, 'dist/controller/cli/main.js');
const POOL_CIDR = '198.18.0.0/16';

interface DemoPod { name: string; host: ClusterHost; ns: Netns; att: Attachment; ip: string; result: unknown }
interface Step { step: string; ok: boolean; [k: string]: unknown }

const count = (min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
  return n;
};

const program = new Command('berth-demo')
  .description('A local multi-host Berth cluster: stable pod IPs across restarts and moves')
  .option('--hosts <n>', 'simulated hosts', count(2, 20), 3)
  .option('--pods <n>', 'pods per host', count(1, 20), 2)
  .option('--keep', 'leave the cluster running until Ctrl-C, and print how to use berthctl against it')
  .option('--json', 'print the steps\' results as JSON instead of prose')
  .option('--fast-path', 'run the agents with --fast-path (BPF shortcut for pod-to-pod traffic; docs/dataplane.md)')
  .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') });

async function main(): Promise<number> {
  program.parse();
  const o = program.opts<{ hosts: number; pods: number; keep?: boolean; json?: boolean; fastPath?: boolean }>();
  if (process.getuid?.() !== 0) {
    process.stderr.write('berth demo: must run as root (it creates network namespaces)\n');
    return 1;
  }
  const steps: Step[] = [];
  const say = (text: string) => { if (!o.json) process.stdout.write(`${text}\n`); };
  const record = (s: Step) => { steps.push(s); };
  let cluster: Cluster | undefined;
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    say('\n7. Tearing down: agents, controller, etcd, namespaces, temp dir.');
    await cluster?.teardown();
  };
  const onSignal = (sig: string) => {
    process.stderr.write(`\nberth demo: ${sig}, tearing down\n`);
    teardown().finally(() => process.exit(130));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  try {
    say(`1. Starting etcd, a controller and ${o.hosts} simulated hosts, each running berth-agent${o.fastPath ? ' --fast-path' : ''} in its own network namespace.`);
    cluster = await startCluster({ hosts: o.hosts, poolCidr: POOL_CIDR, hold: 3600, ...(o.fastPath ? { agentEnv: { BERTH_FAST_PATH: '1' } } : {}) });
    const c = cluster;
    for (const h of c.hosts) say(`   host ${h.name}: underlay ${h.sim.underlayIp}, agent pid ${h.pid}`);
    record({ step: 'cluster', ok: true, namespacePrefix: `bth-${c.lab.id}-`, dir: c.dir, hosts: c.hosts.map((h) => ({ name: h.name, underlayIp: h.sim.underlayIp })) });

    // Install the plugin as a node would: a CNI bin dir and, per host, a conf dir.
    const binDir = join(c.dir, 'opt/cni/bin');
    mkdirSync(binDir, { recursive: true });
    copyFileSync(PLUGIN, join(binDir, 'berth'));
    const runtimes = new Map<string, CniRuntime>();
    for (const h of c.hosts) {
      const confDir = join(h.dir, 'etc/cni/net.d');
      mkdirSync(confDir, { recursive: true });
      const conflist = join(confDir, '10-berth.conflist');
      writeFileSync(conflist, JSON.stringify({ cniVersion: '1.0.0', name: 'berth', plugins: [{ type: 'berth', pool: c.pool.name, agentSocket: h.socket, journalDir: h.journalDir }] }));
      runtimes.set(h.name, new CniRuntime(binDir, conflist));
    }
    say(`\n2. Pool "${c.pool.name}" is ${c.pool.cidr} (gateway ${c.pool.gateway}). Creating ${o.pods} pod(s) per host through ${binDir}/berth.`);

    const addPod = async (h: ClusterHost, name: string): Promise<DemoPod> => {
      const ns = c.lab.pod(name);
      const att: Attachment = { containerId: randomBytes(16).toString('hex'), netns: ns.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'demo', K8S_POD_NAME: name } };
      const out = await runtimes.get(h.name)!.add(att);
      if (out.code !== 0) throw new Error(`CNI ADD of ${name} on ${h.name} failed: ${JSON.stringify(out.error)}`);
      const ipText = String(out.result.ips[0].address).split('/')[0];
      return { name, host: h, ns, att, ip: ipText, result: out.result };
    };
    const delPod = async (p: DemoPod) => {
      const out = await runtimes.get(p.host.name)!.del(p.att, p.result);
      if (out.code !== 0) throw new Error(`CNI DEL of ${p.name} failed: ${JSON.stringify(out.error)}`);
      ip('netns', 'del', p.ns.name);
    };

    const pods: DemoPod[] = [];
    for (const [i, h] of c.hosts.entries()) {
      for (let j = 0; j < o.pods; j++) {
        const p = await addPod(h, `web-${i}-${j}`);
        pods.push(p);
        say(`   ${p.name.padEnd(9)} on ${h.name}: ${p.ip}  (identity k8s/demo/${p.name})`);
      }
    }
    record({ step: 'pods', ok: true, pods: pods.map((p) => ({ name: p.name, host: p.host.name, ip: p.ip })) });

    await c.waitConverged({ timeoutMs: 20_000 });
    say('\n3. Cross-host pings, every pod to one pod on every other host:');
    const matrix: { from: string; to: string; ip: string; ok: boolean }[] = [];
    for (const from of pods) {
      for (const h of c.hosts) {
        if (h === from.host) continue;
        const to = pods.find((p) => p.host === h)!;
        const ok = await pingEventually(c, from.ns, to.ip);
        matrix.push({ from: from.name, to: to.name, ip: to.ip, ok });
        say(`   ${from.name.padEnd(9)} (${from.host.name}) -> ${to.name.padEnd(9)} ${to.ip.padEnd(13)} ${ok ? 'reply' : 'NO REPLY'}`);
      }
    }
    if (o.fastPath) {
      // The fast path never forwards through a host stack, so the reply keeps its TTL of 64.
      const [from, to] = [pods[0], pods.find((p) => p.host !== pods[0].host)!];
      const ttl = /ttl=(\d+)/.exec(nsExec(from.ns, 'ping', '-c', '1', '-W', '1', to.ip))?.[1];
      say(`   fast path: ${from.name} -> ${to.name} reply ttl=${ttl} (64: no host stack forwarded it; 62: both did)`);
    }
    const allPinged = matrix.every((m) => m.ok);
    record({ step: 'ping', ok: allPinged, pings: matrix });
    if (!allPinged) throw new Error('some cross-host pings failed');

    const subject = pods[0];
    const before = subject.ip;
    say(`\n4. Restarting ${subject.name} on ${subject.host.name}: CNI DEL, delete its netns, new netns and container id, CNI ADD.`);
    await delPod(subject);
    const restarted = await addPod(subject.host, subject.name);
    pods[0] = restarted;
    say(`   before ${before}, after ${restarted.ip}: ${restarted.ip === before ? 'same IP' : 'DIFFERENT IP'}`);
    record({ step: 'restart', ok: restarted.ip === before, before, after: restarted.ip });
    if (restarted.ip !== before) throw new Error('the restarted pod changed address');

    const target = c.hosts[1];
    say(`\n5. Moving ${subject.name} from ${restarted.host.name} to ${target.name}.`);
    await delPod(restarted);
    const moved = await addPod(target, subject.name);
    pods[0] = moved;
    await c.waitConverged({ timeoutMs: 20_000 });
    const reach: { from: string; ok: boolean }[] = [];
    for (const h of c.hosts) {
      if (h === target) continue;
      // With one pod per host the old host has none left: start a probe pod there.
      const from = pods.find((p) => p.host === h && p !== moved) ?? await addPod(h, `probe-${h.name}`);
      const ok = await pingEventually(c, from.ns, moved.ip);
      reach.push({ from: `${from.name}@${h.name}`, ok });
      say(`   ${from.name.padEnd(9)} (${h.name}) -> ${moved.ip} now on ${target.name}: ${ok ? 'reply' : 'NO REPLY'}`);
    }
    const moveOk = moved.ip === before && reach.every((r) => r.ok);
    say(`   address after the move: ${moved.ip} (${moved.ip === before ? 'same IP' : 'DIFFERENT IP'})`);
    record({ step: 'move', ok: moveOk, ip: moved.ip, host: target.name, reach });
    if (!moveOk) throw new Error('the moved pod changed address or is unreachable');

    say('\n6. What the controller knows:');
    // Async: the controller lives in this process and must keep serving while berthctl runs.
    const ctl = async (...args: string[]) => (await promisify(execFile)(process.execPath, [BERTHCTL, '--controller', c.controllerUrl, ...args], { encoding: 'utf8' })).stdout;
    const table = await ctl('leases', 'ls');
    const history = await ctl('leases', 'history', moved.ip);
    say(`\n$ berthctl leases ls\n${table.trimEnd()}`);
    say(`\n$ berthctl leases history ${moved.ip}\n${history.trimEnd()}`);
    record({ step: 'leases', ok: true, leases: JSON.parse(await ctl('leases', 'ls', '--json')), history: JSON.parse(await ctl('leases', 'history', moved.ip, '--json')) });

    if (o.keep) {
      say(`\nThe cluster keeps running. In another shell:\n  node ${BERTHCTL} --controller ${c.controllerUrl} leases ls\n  ip netns exec ${moved.ns.name} ping -c1 ${pods[pods.length - 1].ip}\nPress Ctrl-C here to tear everything down.`);
      if (o.json) process.stdout.write(`${JSON.stringify({ ok: true, steps, controller: c.controllerUrl }, null, 2)}\n`);
      await new Promise(() => undefined);
    }
    await teardown();
    if (o.json) process.stdout.write(`${JSON.stringify({ ok: true, steps }, null, 2)}\n`);
    else say('\nDone: same IP across a restart and a move, reachable from every host; nothing left behind.');
    return 0;
  } catch (e) {
    process.stderr.write(`berth demo: ${(e as Error).message}\n`);
    await teardown().catch(() => undefined);
    if (o.json) process.stdout.write(`${JSON.stringify({ ok: false, steps, error: (e as Error).message }, null, 2)}\n`);
    return 1;
  }
}

/** Pings until answered, for a bounded time: a fresh route may take one reconcile pass. */
async function pingEventually(c: Cluster, from: Netns, ipText: string): Promise<boolean> {
  return eventually(() => { if (!c.ping(from, ipText)) throw new Error('no reply'); return true; }, { timeoutMs: 10_000, intervalMs: 100 })
    .catch(() => false);
}

main().then((code) => process.exit(code), (e) => {
  process.stderr.write(`berth demo: ${(e as Error).message}\n`);
  process.exit(1);
});
