/**
 * The controller Deployment and the agent DaemonSet in deploy/kubernetes,
 * executed: the controller, the install-cni init container and the agent
 * run with their `command`, `args` and
 * `env` exactly as the YAML has them (test/harness/kubelet.ts: $(VAR)
 * expansion, ConfigMap keys, the downward API, service variables; host paths
 * mapped onto a temp node root), on a simulated host of a real cluster,
 * each under what a runtime would impose (harness/kubelet.ts
 * containerWrapper): exactly the capabilities its securityContext lists,
 * /proc/sys read-only unless privileged.
 * Each must pass the manifest's own readiness probe (the agent reaching the
 * controller through the Service's variables, with the Secret's token), and a runtime then
 * creates a pod through the plugin and conflist the init container
 * installed. A flag renamed in the code but not in the manifest fails here.
 * The conflist: the init container (--no-conflist) removes a stale one and
 * writes none; the agent (--cni-conf-dir) publishes it, with install-cni's
 * bytes, once it is ready, and withdraws it when it gets SIGTERM.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniRuntime } from '../demo/runtime';
import { conflistText } from '../agent/install-cni';
import { podRoundTrip } from './harness/plugin';
import { startCluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsTry } from '../sim/netns';
import { K8S_DIR, parseYamlDocs } from './harness/k8s';
import { containerCapabilities, containerProcess, containerWrapper, effectiveCapabilities, type NodeContext } from './harness/kubelet';

const ROOT = join(__dirname, '../..');
const load = (f: string) => parseYamlDocs(readFileSync(join(K8S_DIR, f), 'utf8'), f);

function run(ns: string, wrapper: string[], argv: string[], env: Record<string, string>, logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ...wrapper, ...argv], { stdio: ['ignore', fd, fd], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
  closeSync(fd);
  return child;
}

test('the Deployment\'s controller, the DaemonSet\'s install-cni and agent run as written; a pod gets an address through what they set up', async (t) => {
  const [ds] = load('base/agent.yaml') as any[];
  const deployment = (load('base/controller.yaml') as any[]).find((o) => o.kind === 'Deployment');
  const controllerService = (load('base/controller.yaml') as any[]).find((o) => o.kind === 'Service');
  const config = (load('base/config.yaml') as any[]).find((o) => o.kind === 'ConfigMap');
  const podSpec = ds.spec.template.spec;
  const c = await startCluster({ hosts: 1, poolCidr: '198.18.41.0/24', poolName: config.data.pool });
  const children: ChildProcess[] = [];
  const root = mkdtempSync(join(tmpdir(), 'berth-node-'));
  t.teardown(async () => {
    for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) {
      const gone = new Promise((r) => ch.once('exit', r));
      ch.kill('SIGTERM');
      await gone;
    }
    await c.teardown();
    rmSync(root, { recursive: true, force: true });
  });
  const h = c.hosts[0];
  await c.stopAgent(h); // the manifest's agent takes this host over

  const node: NodeContext = {
    root, checkout: ROOT, nodeName: h.name, hostIP: h.sim.underlayIp,
    // The operator's inputs: where etcd is (here, the test's), the pool as the YAML says, a token.
    configMaps: { 'berth-config': { ...config.data, 'etcd-endpoints': c.etcd.socketEndpoint } },
    secrets: { 'berth-api-token': { 'api-token': 'manifest-test-token\n' } },
    // The controller Service's ClusterIP, as kube-proxy serves it on the node: here the replica on this node.
    serviceEnv: { BERTH_CONTROLLER_SERVICE_HOST: '127.0.0.1', BERTH_CONTROLLER_SERVICE_PORT: String(controllerService.spec.ports.find((p: any) => p.name === 'api').port) },
  };
  const log = join(root, 'containers.log');

  const ready = async (child: ChildProcess, container: any, what: string) => {
    const probe = container.readinessProbe.httpGet;
    const url = `http://${probe.host ?? '127.0.0.1'}:${probe.port}${probe.path}`;
    await eventually(() => {
      if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}`);
      if (!nsTry(h.sim.name, process.execPath, '-e', `fetch(${JSON.stringify(url)}).then((r)=>process.exit(r.status===200?0:1),()=>process.exit(1))`)) throw new Error('not ready');
    }, { timeoutMs: 20_000, intervalMs: 200, what: `${what} to pass its readiness probe` }).catch((e) => { throw new Error(`${(e as Error).message}\n${readFileSync(log, 'utf8').slice(-2000)}`); });
  };

  // A controller replica on this node, from the Deployment (hostNetwork, like the agent).
  const cSpec = deployment.spec.template.spec;
  t.is(cSpec.containers.length, 1);
  const ctl = containerProcess(cSpec, cSpec.containers[0], node);
  const ctlChild = run(h.sim.name, containerWrapper(cSpec, cSpec.containers[0], node), ctl.argv, ctl.env, log);
  children.push(ctlChild);
  await ready(ctlChild, cSpec.containers[0], 'the controller');

  // A conflist an earlier install (or a SIGKILLed agent) left on the node.
  const conflist = join(root, 'etc/cni/net.d/10-berth.conflist');
  mkdirSync(join(root, 'etc/cni/net.d'), { recursive: true });
  writeFileSync(conflist, '{"stale":true}\n');

  t.is(podSpec.initContainers.length, 1);
  const init = containerProcess(podSpec, podSpec.initContainers[0], node);
  const initChild = run(h.sim.name, containerWrapper(podSpec, podSpec.initContainers[0], node), init.argv, init.env, log);
  const initCode = await new Promise<number | null>((r) => initChild.once('exit', (code) => r(code)));
  t.is(initCode, 0, readFileSync(log, 'utf8'));
  t.true(existsSync(join(root, 'opt/cni/bin/berth')), 'the init container installed the plugin');
  t.false(existsSync(conflist), 'the init container leaves no conflist: no network until the agent is ready');

  t.is(podSpec.containers.length, 1);
  const agent = containerProcess(podSpec, podSpec.containers[0], node);
  // With exactly the manifest's capabilities, /proc/sys read-only and the host's /proc/sys/net mounted, as a runtime runs it.
  const agentChild = run(h.sim.name, containerWrapper(podSpec, podSpec.containers[0], node), agent.argv, agent.env, log);
  children.push(agentChild);
  // The manifest's readiness probe, run where kubelet would (the node's network namespace).
  await ready(agentChild, podSpec.containers[0], 'the agent');
  t.false(podSpec.containers[0].securityContext.privileged, 'the agent is not privileged');
  t.deepEqual(effectiveCapabilities(readFileSync(`/proc/${agentChild.pid}/status`, 'utf8')), [...containerCapabilities(podSpec.containers[0])].sort(),
    'the agent runs with exactly the manifest\'s capabilities');

  // Ready: the agent published the conflist, pointing at its own socket and journal as the manifest gives them.
  await eventually(() => { if (!existsSync(conflist)) throw new Error('no conflist'); }, { what: 'the agent to publish the conflist' });
  t.is(readFileSync(conflist, 'utf8'), conflistText({
    cniVersion: '1.0.0', network: 'berth', pool: config.data.pool, chain: [],
    agentSocket: join(root, 'run/berth/agent.sock'), journalDir: join(root, 'var/lib/berth/del-journal'),
  }));

  const rt = new CniRuntime(join(root, 'opt/cni/bin'), conflist);
  const result = await podRoundTrip(t, c, rt, h, 'web-0', 'manifest0123');
  t.true(String(result.ips[0].address).startsWith('198.18.41.'), result.ips[0].address);

  // SIGTERM, as kubelet stops the container: the conflist is gone once the agent has exited.
  const exited = new Promise((r) => agentChild.once('exit', r));
  agentChild.kill('SIGTERM');
  await exited;
  t.false(existsSync(conflist), 'the stopped agent withdrew the conflist');
});
