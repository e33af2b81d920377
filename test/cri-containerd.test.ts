/**
 * The kubelet path, through containerd's CRI plugin (docs/kubernetes.md
 * "What containerd sends"): two simulated hosts, each with Berth's real
 * agent and its own containerd (Debian's 1.6, test/harness/cri/containerd.ts)
 * in the host's network namespace, driven over the CRI gRPC API as kubelet
 * drives it (RunPodSandbox, PodSandboxStatus, StopPodSandbox,
 * RemovePodSandbox, ListPodSandbox, Status). The plugin in the CNI bin dir
 * is what the DaemonSet's install-cni init container installs, run as the
 * manifest has it (test/harness/kubelet.ts); the conflist is what the agent
 * publishes there while it is ready (--cni-conf-dir, --cni-bin-dir, as the
 * DaemonSet starts it). The sandbox image is the local pause image
 * (test/harness/cri/image.ts). The tests run in order and share the two
 * containerds (one start each).
 *
 * A `berth` and a `portmap` wrapper in the bin dir record every call
 * containerd makes (CNI_* environment, stdin) before exec'ing the real
 * plugin; the last test asserts what containerd sent.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster, type Cluster, type ClusterHost, type Pod } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec, nsTry, tcpProbe, type Netns } from '../sim/netns';
import { CriError, type PodSandboxConfig, type PortMapping } from './harness/cri/client';
import { NETNS_DIR, PAUSE_IMAGE, pickSnapshotter, startContainerd, type Containerd } from './harness/cri/containerd';
import { buildPauseImage } from './harness/cri/image';
import { K8S_DIR, parseYamlDocs } from './harness/k8s';
import { containerProcess, type NodeContext } from './harness/kubelet';

const ROOT = join(__dirname, '../..');
const POOL = '198.18.47.0/24';

interface Node { h: ClusterHost; root: string; cd: Containerd; probe?: Pod }
interface Call { at: bigint; plugin: string; env: Record<string, string>; conf: any }

let c: Cluster;
let dir: string;
let nodes: Node[] = [];
let netnsBefore: Set<string>;
let captureDir: string;

const cniNetns = () => new Set(fs.existsSync(NETNS_DIR) ? fs.readdirSync(NETNS_DIR).filter((n) => n.startsWith('cni-')) : []);
const netnsOf = (path: string): Netns => ({ name: path.split('/').pop()!, path });

/** The DaemonSet's install-cni init container, run in the host's namespace with its args and env as written. */
function installCni(n: Node): { code: number | null; out: string } {
  const [ds] = parseYamlDocs(fs.readFileSync(join(K8S_DIR, 'base/agent.yaml'), 'utf8'), 'agent.yaml') as any[];
  const config = parseYamlDocs(fs.readFileSync(join(K8S_DIR, 'base/config.yaml'), 'utf8'), 'config.yaml').find((o) => o.kind === 'ConfigMap') as any;
  const podSpec = ds.spec.template.spec;
  const ctx: NodeContext = {
    root: n.root, checkout: ROOT, nodeName: n.h.name, hostIP: n.h.sim.underlayIp,
    configMaps: { 'berth-config': { ...config.data, pool: c.pool.name } }, secrets: {}, serviceEnv: {},
  };
  const p = containerProcess(podSpec, podSpec.initContainers.find((x: { name: string }) => x.name === 'install-cni'), ctx);
  try {
    const out = execFileSync('ip', ['netns', 'exec', n.h.sim.name, ...p.argv], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...p.env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number | null; stdout: string; stderr: string };
    return { code: err.status, out: `${err.stdout}${err.stderr}` };
  }
}

/** Replaces bin/<plugin> with a recorder that saves CNI_* and stdin, then execs the real plugin. */
function wrap(binDir: string, plugin: string): void {
  const real = join(binDir, `.${plugin}-recorded`);
  fs.renameSync(join(binDir, plugin), real);
  const script = `#!/bin/sh
d=$(mktemp -d ${captureDir}/call-XXXXXXXX)
date +%s%N > "$d/at"
echo ${plugin} > "$d/plugin"
env > "$d/env"
cat > "$d/stdin"
exec ${real} < "$d/stdin"
`;
  fs.writeFileSync(join(binDir, plugin), script, { mode: 0o755 });
}

function calls(): Call[] {
  return fs.readdirSync(captureDir).map((d) => {
    const p = join(captureDir, d);
    const read = (f: string) => { try { return fs.readFileSync(join(p, f), 'utf8'); } catch { return ''; } };
    const env = Object.fromEntries(read('env').split('\n').filter((l) => l.startsWith('CNI_')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    let conf: any = {};
    try { conf = JSON.parse(read('stdin')); } catch { /* being written */ }
    return { at: BigInt(read('at').trim() || '0'), plugin: read('plugin').trim(), env, conf };
  }).sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
}

let uidSeq = 0;
/** A PodSandboxConfig as kubelet builds it for a pod (labels, DNS, cgroup parent, pod network namespace). */
const ANNOTATIONS = { 'kubernetes.io/config.source': 'api', 'kubernetes.io/config.seen': new Date(0).toISOString() };
function sandbox(n: Node, namespace: string, name: string, o: { portMappings?: PortMapping[]; annotations?: Record<string, string> } = {}): PodSandboxConfig {
  const uid = `00000000-0000-4000-8000-${String(++uidSeq).padStart(12, '0')}`;
  return {
    metadata: { name, namespace, uid, attempt: 0 },
    hostname: name,
    logDirectory: join(n.cd.dir, 'pods', `${namespace}_${name}_${uid}`),
    dnsConfig: { servers: ['198.19.0.53'], searches: [`${namespace}.svc.cluster.local`, 'svc.cluster.local'], options: ['ndots:5'] },
    portMappings: o.portMappings ?? [],
    labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': namespace, 'io.kubernetes.pod.uid': uid },
    annotations: { ...ANNOTATIONS, ...o.annotations },
    linux: { cgroupParent: `${n.cd.cgroupParent}/pod${uid}`, securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
  };
}

/** RunPodSandbox, then what kubelet reads back: the status' IP, and the netns (for the test's own probes). */
async function run(n: Node, cfg: PodSandboxConfig): Promise<{ id: string; ip: string; netns: Netns }> {
  const id = await n.cd.cri.runPodSandbox(cfg);
  const netnsPath = await n.cd.track(id);
  const st = (await n.cd.cri.podSandboxStatus(id)).status;
  if (st.state !== 'SANDBOX_READY') throw new Error(`sandbox ${id} is ${st.state}`);
  return { id, ip: st.network?.ip ?? '', netns: netnsOf(netnsPath) };
}

async function remove(n: Node, id: string): Promise<void> {
  await n.cd.cri.stopPodSandbox(id);
  await n.cd.cri.removePodSandbox(id);
}

/** The agent as the DaemonSet starts it, as far as CNI goes: publishing the conflist into the node's conf dir while ready. */
const startAgent = (n: Node) => c.startAgent(n.h, { args: ['--cni-conf-dir', n.cd.confDir, '--cni-bin-dir', n.cd.binDir] });
const conflistPath = (n: Node) => join(n.cd.confDir, '10-berth.conflist');

const links = (h: ClusterHost) => new Set(nsExec(h.sim, 'ip', '-o', 'link', 'show').split('\n').filter(Boolean).map((l) => l.split(': ')[1].split('@')[0]));
const lease = async (ip: string) => c.client.lease(ip, c.pool.name);

test.before(async () => {
  netnsBefore = cniNetns();
  dir = fs.mkdtempSync(join(tmpdir(), 'berth-cri-'));
  captureDir = join(dir, 'calls');
  fs.mkdirSync(captureDir);
  const image = buildPauseImage(join(dir, 'image'), PAUSE_IMAGE);
  const snapshotter = pickSnapshotter(dir);
  c = await startCluster({ hosts: 2, poolCidr: POOL });
  nodes = await Promise.all(c.hosts.map(async (h) => {
    const root = join(dir, `${h.name}-root`); // the node's `/`
    const binDir = join(root, 'opt/cni/bin');
    const confDir = join(root, 'etc/cni/net.d');
    fs.mkdirSync(binDir, { recursive: true });
    fs.mkdirSync(confDir, { recursive: true });
    // The node's reference plugins: containerd always runs `loopback`; `portmap` gets chained.
    for (const p of ['loopback', 'portmap']) fs.copyFileSync(`/usr/lib/cni/${p}`, join(binDir, p));
    fs.chmodSync(join(binDir, 'loopback'), 0o755);
    const cd = await startContainerd({ netns: h.sim.name, dir: join(dir, `${h.name}-containerd`), pauseImage: image, snapshotter, binDir, confDir });
    return { h, root, cd };
  }));
});

test.after.always(async () => {
  await Promise.all(nodes.map((n) => n.cd.stop().catch(() => undefined)));
  await c?.teardown();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test.serial('Status says NetworkReady=false until the agent publishes its conflist, and true within a second after (the rename is picked up)', async (t) => {
  for (const n of nodes) {
    const st = await n.cd.cri.status();
    t.is(st.conditions.find((x) => x.type === 'RuntimeReady')?.status, true, JSON.stringify(st.conditions));
    t.false(await n.cd.cri.networkReady(), `${n.h.name}: no conflist yet`);
  }
  for (const n of nodes) {
    // The init container installs the plugin only: the node is not ready for pods yet.
    const r = installCni(n);
    t.is(r.code, 0, r.out);
    t.true(fs.existsSync(join(n.cd.binDir, 'berth')));
    t.false(fs.existsSync(conflistPath(n)));
    t.false(await n.cd.cri.networkReady());
    await c.stopAgent(n.h);
    await startAgent(n);
    // containerd 1.6 reloads on fsnotify events other than CREATE; a bounded poll, not a sleep.
    await eventually(async () => { if (!(await n.cd.cri.networkReady())) throw new Error('NetworkReady still false'); }, { timeoutMs: 5000, intervalMs: 2, what: `${n.h.name}: NetworkReady once the agent published` });
    t.log(`${n.h.name}: NetworkReady seen ${(Date.now() - fs.statSync(conflistPath(n)).mtimeMs).toFixed(1)} ms after the conflist was written`);
  }
  const conflist = JSON.parse(fs.readFileSync(conflistPath(nodes[0]), 'utf8'));
  t.deepEqual(conflist.plugins.map((p: { type: string }) => p.type), ['berth', 'portmap']);
  for (const n of nodes) for (const p of ['berth', 'portmap']) wrap(n.cd.binDir, p);
});

test.serial('the agent stopped (SIGTERM): Status says NetworkReady=false; started again: true', async (t) => {
  for (const n of nodes) {
    await c.stopAgent(n.h, 'SIGTERM');
    t.false(fs.existsSync(conflistPath(n)), 'withdrawn by the time the agent exited');
    await eventually(async () => { if (await n.cd.cri.networkReady()) throw new Error('NetworkReady still true'); }, { timeoutMs: 5000, intervalMs: 5, what: `${n.h.name}: NetworkReady false` });
    const st = await n.cd.cri.status();
    t.is(st.conditions.find((x) => x.type === 'NetworkReady')?.reason, 'NetworkPluginNotReady');
    await startAgent(n);
    await eventually(async () => { if (!(await n.cd.cri.networkReady())) throw new Error('NetworkReady still false'); }, { timeoutMs: 5000, intervalMs: 5, what: `${n.h.name}: NetworkReady true again` });
  }
});

test.serial('RunPodSandbox of ns1/web-0 gets a Berth address, reachable from a pod on another host', async (t) => {
  const [n1, n2] = nodes;
  n1.probe = await c.plumbPod(n1.h, 'probe-1');
  n2.probe = await c.plumbPod(n2.h, 'probe-2');
  const s = await run(n1, sandbox(n1, 'ns1', 'web-0'));
  t.regex(s.ip, /^198\.18\.47\./);
  const l = await lease(s.ip);
  t.is(l.identity, 'k8s/ns1/web-0');
  t.is(l.state, 'bound');
  t.is(l.binding?.host, n1.h.name);
  await c.waitConverged();
  await eventually(() => { if (!c.ping(n2.probe!.ns, s.ip)) throw new Error('no answer'); }, { what: `${s.ip} from ${n2.h.name}'s pod` });
  t.true(nsTry(s.netns, 'ping', '-c1', '-W1', '-q', n2.probe!.ip), 'from inside the sandbox to the other host\'s pod');
  await remove(n1, s.id);
});

test.serial('ns1/web-0 run again with a new uid gets the same address; so does a move to the other host\'s containerd', async (t) => {
  const [n1, n2] = nodes;
  const first = await run(n1, sandbox(n1, 'ns1', 'web-0'));
  await remove(n1, first.id);
  const again = await run(n1, sandbox(n1, 'ns1', 'web-0'));
  t.not(again.id, first.id);
  t.is(again.ip, first.ip);
  await remove(n1, again.id);
  const moved = await run(n2, sandbox(n2, 'ns1', 'web-0'));
  t.is(moved.ip, first.ip);
  t.is((await lease(moved.ip)).binding?.host, n2.h.name);
  await c.waitConverged();
  await eventually(() => { if (!c.ping(n1.probe!.ns, moved.ip)) throw new Error('no answer'); }, { what: `${moved.ip} on ${n2.h.name} from ${n1.h.name}'s pod` });
  await remove(n2, moved.id);
});

test.serial('a port mapping reaches the pod through chained portmap, from another host', async (t) => {
  const [n1, n2] = nodes;
  const s = await run(n1, sandbox(n1, 'ns1', 'web-pm', { portMappings: [{ protocol: 'TCP', containerPort: 8080, hostPort: 30080 }] }));
  await c.lab.echoServer(s.netns, s.ip, 8080);
  // The echo server answers with the peer it saw: the client's own underlay address (DNAT, no SNAT).
  const seen = await eventually(() => tcpProbe(n2.h.sim, n1.h.sim.underlayIp, 30080), { what: `${n1.h.sim.underlayIp}:30080 from ${n2.h.name}` });
  t.is(seen, n2.h.sim.underlayIp);
  const dnat = () => nsExec(n1.h.sim, 'iptables-save', '-t', 'nat').split('\n').filter((l) => l.startsWith(':CNI-DN-'));
  t.is(dnat().length, 1, 'portmap\'s per-sandbox DNAT chain');
  await remove(n1, s.id);
  t.deepEqual(dnat(), [], 'portmap\'s DEL removed its chain');
  t.throws(() => tcpProbe(n2.h.sim, n1.h.sim.underlayIp, 30080), undefined, 'the mapping is gone with the sandbox');
});

test.serial('a pod\'s berth.io/ip annotation reaches the agent through containerd: the sandbox gets that address', async (t) => {
  const [n1] = nodes;
  const want = '198.18.47.200';
  const s = await run(n1, sandbox(n1, 'ns2', 'pinned-0', { annotations: { 'berth.io/ip': want } }));
  t.is(s.ip, want);
  t.is((await lease(want)).identity, 'k8s/ns2/pinned-0');
  await remove(n1, s.id);
  const bad = await t.throwsAsync(n1.cd.cri.runPodSandbox(sandbox(n1, 'ns2', 'pinned-1', { annotations: { 'berth.io/ip': 'nope' } })), { instanceOf: CriError }) as CriError;
  t.log(bad.line);
  t.regex(bad.line, /plugin type="berth" failed \(add\): .*berth\.io\/ip: not an IPv4 address/);
  t.false(bad.line.includes('\n'));
});

test.serial('Stop and Remove release the lease (held) and leave nothing in the host namespace', async (t) => {
  const [n1] = nodes;
  const before = links(n1.h);
  const s = await run(n1, sandbox(n1, 'ns1', 'web-1'));
  const added = [...links(n1.h)].filter((l) => !before.has(l));
  t.is(added.length, 1, `one host-side veth, got ${added.join(' ')}`);
  await n1.cd.cri.stopPodSandbox(s.id);
  t.is((await lease(s.ip)).state, 'held');
  t.false(fs.existsSync(s.netns.path), 'the pod netns is gone at Stop');
  await n1.cd.cri.removePodSandbox(s.id);
  const l = await lease(s.ip);
  t.is(l.state, 'held');
  t.is(l.identity, 'k8s/ns1/web-1');
  t.deepEqual([...links(n1.h)].filter((x) => !before.has(x)), []);
  t.deepEqual((await n1.cd.cri.listPodSandbox()).filter((x) => x.id === s.id), []);
});

test.serial('the agent down during RunPodSandbox: kubelet\'s error is one clear line; the retry succeeds once it is back', async (t) => {
  const [n1] = nodes;
  const cfg = sandbox(n1, 'ns1', 'web-2');
  const netnsBeforeRun = cniNetns();
  // Killed, as a crash would (a SIGTERMed agent may tidy up first): its socket file stays, nobody listens.
  await c.stopAgent(n1.h, 'SIGKILL');
  const err = await t.throwsAsync(n1.cd.cri.runPodSandbox(cfg), { instanceOf: CriError }) as CriError;
  t.log(err.line);
  t.false(err.line.includes('\n'), err.line);
  t.notRegex(err.line, /\bat .*\.(js|ts):\d+/);
  t.regex(err.line, /plugin type="berth" failed \(add\)/);
  t.regex(err.line, /try again later; TryAgainLater: agent unavailable at \/\S+\/agent\.sock: ECONNREFUSED$/);
  t.deepEqual([...cniNetns()].filter((x) => !netnsBeforeRun.has(x)), [], 'the failed attempt\'s netns is removed');
  t.true(fs.existsSync(conflistPath(n1)), 'a killed agent could not withdraw its conflist: the node still looks ready');
  await startAgent(n1);
  const ok = await run(n1, cfg);
  t.regex(ok.ip, /^198\.18\.47\./);
  t.is((await lease(ok.ip)).identity, 'k8s/ns1/web-2');
  await remove(n1, ok.id);
});

test.serial('what containerd sent: ADD with the pod\'s CNI_ARGS, DEL at Stop with the netns, DEL at Remove without', async (t) => {
  const berth = calls().filter((x) => x.plugin === 'berth');
  const web1 = berth.filter((x) => /K8S_POD_NAME=web-1(;|$)/.test(x.env.CNI_ARGS ?? ''));
  t.deepEqual(web1.map((x) => x.env.CNI_COMMAND), ['ADD', 'DEL', 'DEL']);
  t.true(web1[0].env.CNI_NETNS.startsWith(`${NETNS_DIR}/cni-`), web1[0].env.CNI_NETNS);
  t.is(web1[1].env.CNI_NETNS, web1[0].env.CNI_NETNS);
  t.is(web1[2].env.CNI_NETNS ?? '', '');
  t.true(web1.every((x) => x.env.CNI_CONTAINERID === web1[0].env.CNI_CONTAINERID && x.env.CNI_IFNAME === 'eth0'));
  const args = Object.fromEntries(web1[0].env.CNI_ARGS.split(';').map((kv) => kv.split('=')));
  t.is(args.K8S_POD_NAMESPACE, 'ns1');
  t.is(args.K8S_POD_INFRA_CONTAINER_ID, web1[0].env.CNI_CONTAINERID);
  const verbs = [...new Set(calls().map((x) => `${x.plugin} ${x.env.CNI_COMMAND}`))].sort();
  t.deepEqual(verbs, ['berth ADD', 'berth DEL', 'portmap ADD', 'portmap DEL']);
  const pm = calls().filter((x) => x.plugin === 'portmap' && /K8S_POD_NAME=web-pm(;|$)/.test(x.env.CNI_ARGS ?? ''));
  // Go field names, as containerd marshals them (portmap matches keys case-insensitively).
  t.deepEqual(pm[0].conf.runtimeConfig?.portMappings, [{ HostPort: 30080, ContainerPort: 8080, Protocol: 'tcp', HostIP: '' }]);
  // The record behind docs/kubernetes.md "What containerd sends", one line per call.
  for (const x of calls().filter((y) => /K8S_POD_NAME=web-(1|pm)(;|$)/.test(y.env.CNI_ARGS ?? ''))) {
    t.log(`${x.env.CNI_ARGS.match(/K8S_POD_NAME=([^;]*)/)![1]} ${x.plugin} ${x.env.CNI_COMMAND} netns=${x.env.CNI_NETNS ? 'set' : 'empty'} keys=${Object.keys(x.conf).sort().join(',')} runtimeConfig=${JSON.stringify(x.conf.runtimeConfig ?? null)}`);
  }
  t.log(`CNI_ARGS keys: ${Object.keys(args).join(', ')}; CNI_PATH=${web1[0].env.CNI_PATH}`);
  // The DEL at Stop carries the cached result; the one at Remove has neither netns nor result.
  t.true('prevResult' in web1[1].conf);
  t.false('prevResult' in web1[2].conf);
  // runtimeConfig carries exactly the capabilities berth's entry declares; the pod's annotations on every call.
  const caps = Object.keys(web1[0].conf.capabilities ?? {}).filter((k) => web1[0].conf.capabilities[k] === true);
  for (const x of web1) t.deepEqual(Object.keys(x.conf.runtimeConfig ?? {}).sort(), caps.filter((k) => k === 'io.kubernetes.cri.pod-annotations').sort());
  if (caps.includes('io.kubernetes.cri.pod-annotations')) for (const x of web1) t.deepEqual(x.conf.runtimeConfig['io.kubernetes.cri.pod-annotations'], ANNOTATIONS);
});

test.serial('teardown leaves no pod netns, shim or pause process behind', async (t) => {
  const paths = nodes.flatMap((n) => n.cd.netnsPaths());
  t.true(paths.length > 0);
  for (const n of nodes) t.deepEqual(await n.cd.cri.listPodSandbox(), [], `${n.h.name}: every test removed its sandboxes`);
  await Promise.all(nodes.map((n) => n.cd.stop()));
  t.deepEqual(paths.filter((p) => fs.existsSync(p)), []);
  t.deepEqual([...cniNetns()].filter((x) => !netnsBefore.has(x)), []);
});
