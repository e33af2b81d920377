/**
 * Traffic between pods and everything that is not a pod, on a real cluster
 * (real etcd, controller, agents; docs/dataplane.md "Forwarding", "Egress"):
 *   - a host and a pod on another host reach each other both ways, and a
 *     hostPort (portmap chained after berth) answers a pod on another host:
 *     all three need rp_filter 0 on berth.vxlan;
 *   - a pod reaching an "outside" machine on the underlay (not a Berth host)
 *     is seen with its host's underlay address; pod<->pod and pod<->host
 *     keep the pod's own address; --no-masquerade keeps it too;
 *   - the nftables tables survive an agent restart untouched, and a table
 *     changed behind the agent's back is put back.
 * The tests share one cluster and run in order.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { startCluster, type Cluster, type ClusterHost, type Pod } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { BIN, ensureRelay, execWithStdin } from '../sim/exec';
import { nftPath } from '../agent/kernel/firewall';
import { nsExec, tcpProbe, type Netns, type SimHost } from '../sim/netns';

const CNI_DIR = '/usr/lib/cni';
/** By absolute path: under npm, node_modules/.bin has an unrelated `nft` first in PATH. */
const NFT = nftPath() ?? '/usr/sbin/nft';
const env: Record<string, string> = { BERTH_LOG_LEVEL: 'info' };
let c: Cluster;
let outside: SimHost;

test.before(async () => {
  await ensureRelay();
  c = await startCluster({ hosts: 2, poolCidr: '198.18.12.0/24', resyncMs: 300, agentEnv: env });
  // A machine on the underlay that is no Berth host: the "internet" of this cluster.
  outside = c.lab.host('out');
});
test.after.always(async () => {
  await c?.teardown();
});

/** The address a TCP echo server at ip:port saw for a connection from ns (eventually: routes converge). */
const seenBy = (from: Netns, ip: string, port: number) =>
  eventually(() => tcpProbe(from, ip, port), { timeoutMs: 8000, what: `${from.name} -> ${ip}:${port}` });

let port = 7100;
async function server(ns: Netns, ip: string): Promise<number> {
  await c.lab.echoServer(ns, ip, ++port);
  return port;
}

let pods: Pod[] = [];
test.serial('a host reaches a pod on another host', async (t) => {
  const [h1, h2] = c.hosts;
  pods = [await c.plumbPod(h1, 'np-1'), await c.plumbPod(h2, 'np-2')];
  await c.waitConverged();
  const [p1] = pods;
  t.is(await seenBy(h2.sim, p1.ip, await server(p1.ns, p1.ip)), h2.sim.underlayIp, 'from the host\'s underlay address');
  t.true(c.ping(h2.sim, p1.ip), 'ping');
});

test.serial('a pod reaches a host other than its own', async (t) => {
  const [p1] = pods;
  const h2 = c.hosts[1];
  t.is(await seenBy(p1.ns, h2.sim.underlayIp, await server(h2.sim, h2.sim.underlayIp)), p1.ip, 'not masqueraded');
  t.true(c.ping(p1.ns, h2.sim.underlayIp), 'ping');
});

test.serial('a pod reaches a hostPort (portmap chained after berth) on another host', async (t) => {
  if (!existsSync(`${CNI_DIR}/portmap`)) return t.fail('needs /usr/lib/cni/portmap (scripts/ensure-deps.sh installs it)');
  const [h1] = c.hosts;
  const pod = c.lab.pod('hp');
  const ports = [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }];
  const base = { cniVersion: '1.0.0', name: 'berth-net' };
  const chain = [
    { bin: BIN, conf: { ...base, type: 'berth', pool: c.pool.name, agentSocket: h1.socket, journalDir: h1.journalDir } },
    { bin: `${CNI_DIR}/portmap`, conf: { ...base, type: 'portmap', snat: true, capabilities: { portMappings: true }, runtimeConfig: { portMappings: ports } } },
  ];
  const run = (verb: string, bin: string, conf: object) => execWithStdin('ip', ['netns', 'exec', h1.sim.name, bin], {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: verb, CNI_CONTAINERID: 'hostport-1', CNI_NETNS: pod.path,
    CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=hostport-1', CNI_PATH: CNI_DIR,
  }, conf);
  let prev: unknown;
  for (const p of chain) {
    const r = await run('ADD', p.bin, prev === undefined ? p.conf : { ...p.conf, prevResult: prev });
    t.is(r.code, 0, `${p.bin} ADD: ${r.stdout}${r.stderr}`);
    prev = r.json;
  }
  t.teardown(async () => {
    for (const p of [...chain].reverse()) await run('DEL', p.bin, { ...p.conf, prevResult: prev });
  });
  const ip = (prev as { ips: { address: string }[] }).ips[0].address.split('/')[0];
  await c.lab.echoServer(pod, ip, 80);
  await c.waitConverged();
  const remote = pods[1];
  t.is(await seenBy(remote.ns, h1.sim.underlayIp, 18080), remote.ip, 'remote pod -> hostPort -> pod, the client\'s own address');
});

test.serial('pods reach the outside as their host; pod<->pod keeps the pod\'s address', async (t) => {
  const [p1, p2] = pods;
  const out = await server(outside, outside.underlayIp);
  t.is(await seenBy(p1.ns, outside.underlayIp, out), c.hosts[0].sim.underlayIp, 'pod on host-1 -> outside: SNAT to host-1');
  t.is(await seenBy(p2.ns, outside.underlayIp, out), c.hosts[1].sim.underlayIp, 'pod on host-2 -> outside: SNAT to host-2');
  t.is(await seenBy(p1.ns, p2.ip, await server(p2.ns, p2.ip)), p1.ip, 'pod -> pod across hosts: unmasqueraded');
});

test.serial('an agent restart leaves the tables alone; a table changed behind its back is put back', async (t) => {
  const h1 = c.hosts[0];
  const before = nsExec(h1.sim, NFT, 'list', 'table', 'inet', 'berth');
  const from = c.logs(h1).length;
  await c.restartAgent(h1);
  const ready = await c.waitLog(h1, (l) => l.msg === 'agent ready', { fromLine: from });
  t.is(ready.firstPassFirewallOps, 0, 'the first pass found the tables right');
  t.is(nsExec(h1.sim, NFT, 'list', 'table', 'inet', 'berth'), before);

  nsExec(h1.sim, NFT, 'flush', 'chain', 'inet', 'berth', 'egress');
  nsExec(h1.sim, NFT, 'delete', 'table', 'bridge', 'berth');
  const fixed = await c.waitLog(h1, (l) => l.msg === 'firewall pass' && l.ops === 1 && l.verify === true, { fromLine: from });
  t.truthy(fixed);
  await eventually(() => {
    if (!nsExec(h1.sim, NFT, 'list', 'table', 'inet', 'berth').includes('snat ip to')) throw new Error('egress chain still empty');
    nsExec(h1.sim, NFT, 'list', 'table', 'bridge', 'berth');
  }, { what: 'the tables to come back' });
  t.is(await seenBy(pods[0].ns, outside.underlayIp, await server(outside, outside.underlayIp)), h1.sim.underlayIp);
});

test.serial('--no-masquerade destinations see the pod\'s own address', async (t) => {
  const h1 = c.hosts[0];
  const p1 = pods[0];
  // The outside machine routes the pool back through host-1, as a routed network would.
  nsExec(outside, 'ip', 'route', 'replace', c.pool.cidr, 'via', h1.sim.underlayIp);
  env.BERTH_NO_MASQUERADE = `${outside.underlayIp}/32`;
  try {
    await c.restartAgent(h1);
    t.is(await seenBy(p1.ns, outside.underlayIp, await server(outside, outside.underlayIp)), p1.ip);
  } finally {
    delete env.BERTH_NO_MASQUERADE;
    await restart(h1);
  }
});

async function restart(h: ClusterHost): Promise<void> {
  await c.restartAgent(h);
  await c.waitConverged();
}
