/**
 * berth-agent end to end: real etcd, a real controller, three simulated
 * hosts (namespaces) each running a real agent process. Pods are made the
 * way CNI ADD makes them (bind through the controller, veth with
 * attachPod) but without the plugin, which is tested elsewhere. The tests
 * share one cluster and run in order; each leaves it converged.
 */
import test from 'ava';
import { vtepMacFor } from '../agent/desired';
import { startCluster, type Cluster, type LogLine } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec, tcpProbe } from '../sim/netns';

let c: Cluster;

test.before(async () => {
  c = await startCluster({ hosts: 3, poolCidr: '198.18.10.0/24' });
});
test.after.always(async () => {
  await c?.teardown();
});

const pingOk = (from: { name: string }, ip: string) =>
  eventually(() => { if (!c.ping(from as never, ip)) throw new Error(`${from.name} -> ${ip} unreachable`); }, { timeoutMs: 8000, what: `ping ${ip}` });

test.serial('agents register, build devices and connect pods across hosts', async (t) => {
  const { etcd, hosts } = c;
  const registered = await etcd.client().getAll().prefix('/berth/v1/hosts/').strings();
  t.deepEqual(Object.keys(registered).sort(), hosts.map((h) => `/berth/v1/hosts/${h.name}`).sort());
  const h1 = JSON.parse(registered['/berth/v1/hosts/host-1']);
  t.like(h1, { name: 'host-1', underlayIp: hosts[0].sim.underlayIp, vtepMac: vtepMacFor('host-1'), vni: 4242, pool: 'default' });

  const d = nsExec(hosts[0].sim, 'ip', '-d', 'link', 'show', 'berth.vxlan');
  t.regex(d, /mtu 1450/);
  t.regex(d, /vxlan id 4242 local 198\.19\.0\.\d+ .*dstport 4789 nolearning/);
  t.regex(nsExec(hosts[0].sim, 'ip', '-o', 'addr', 'show', 'berth0'), /inet 198\.18\.10\.1\/32/);
  t.is(nsExec(hosts[0].sim, 'cat', '/proc/sys/net/ipv4/ip_forward').trim(), '1');

  const pods = [];
  for (const h of hosts) pods.push(await c.plumbPod(h, `web-${h.name}`));
  await c.waitConverged();
  for (const a of pods) for (const b of pods) if (a !== b) await pingOk(a.ns, b.ip);
  await c.lab.echoServer(pods[2].ns, pods[2].ip, 7001);
  t.is(tcpProbe(pods[0].ns, pods[2].ip, 7001), pods[0].ip, 'routed, not NATed');
  t.regex(nsExec(hosts[0].sim, 'ip', 'route', 'show', `${pods[1].ip}/32`), new RegExp(`via ${hosts[1].sim.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan proto 190 src`));
  for (const p of pods) await c.unplumbPod(p);
  await c.waitConverged();
});

test.serial('an address moving to another host stays reachable from everywhere; the old host drops its local route', async (t) => {
  const [h1, h2, h3] = c.hosts;
  const watcher = await c.plumbPod(h3, 'watcher');
  let mover = await c.plumbPod(h1, 'mover');
  const ip = mover.ip;
  await c.waitConverged();
  await pingOk(watcher.ns, ip);
  t.regex(nsExec(h1.sim, 'ip', 'route', 'show', `${ip}/32`), /dev berth0 proto 190/);

  await c.unplumbPod(mover);
  mover = await c.plumbPod(h2, 'mover');
  t.is(mover.ip, ip, 'same identity, same address');
  await c.waitConverged();
  t.regex(nsExec(h1.sim, 'ip', 'route', 'show', `${ip}/32`), new RegExp(`via ${h2.sim.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan`));
  t.regex(nsExec(h3.sim, 'ip', 'route', 'show', `${ip}/32`), new RegExp(`via ${h2.sim.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan`));
  t.regex(nsExec(h2.sim, 'ip', 'route', 'show', `${ip}/32`), /dev berth0 proto 190/);
  await pingOk(watcher.ns, ip);
  await pingOk(mover.ns, watcher.ip);
  for (const p of [watcher, mover]) await c.unplumbPod(p);
  await c.waitConverged();
});

test.serial('an agent restart makes zero kernel changes and connectivity holds', async (t) => {
  const [h1, h2] = c.hosts;
  const a = await c.plumbPod(h1, 'restart-a');
  const b = await c.plumbPod(h2, 'restart-b');
  await c.waitConverged();
  await pingOk(a.ns, b.ip);
  const before = nsExec(h1.sim, 'ip', 'route', 'show', 'proto', '190') + nsExec(h1.sim, 'bridge', 'fdb', 'show', 'dev', 'berth.vxlan');
  const linksBefore = nsExec(h1.sim, 'ip', '-o', 'link', 'show');
  const from = c.logs(h1).length;
  await c.restartAgent(h1);
  // restartAgent resolves once the CNI socket exists; `agent ready` is logged
  // just after that, so wait for the lines rather than read them at once.
  const ready = await c.waitLog(h1, (l) => l.msg === 'agent ready', { fromLine: from });
  const first = (await c.waitLog(h1, (l) => l.msg === 'reconcile pass', { fromLine: from })) as LogLine & { ops: number; pass: number };
  t.like(first, { pass: 1, ops: 0, failed: 0 }, 'the first pass after a restart plans nothing');
  t.is(ready.firstPassOps, 0);
  t.is(nsExec(h1.sim, 'ip', 'route', 'show', 'proto', '190') + nsExec(h1.sim, 'bridge', 'fdb', 'show', 'dev', 'berth.vxlan'), before);
  t.is(nsExec(h1.sim, 'ip', '-o', 'link', 'show'), linksBefore, 'devices untouched (same indexes)');
  // Peers never saw the host go away: its key was never deleted.
  const hostKey = await c.etcd.client().get('/berth/v1/hosts/host-1').string();
  t.truthy(hostKey);
  await pingOk(a.ns, b.ip);
  for (const p of [a, b]) await c.unplumbPod(p);
  await c.waitConverged();
});

test.serial('a VXLAN device deleted behind the agent is recreated, with its routes, after the next event', async (t) => {
  const [h1, h2] = c.hosts;
  const a = await c.plumbPod(h1, 'vx-a');
  const b = await c.plumbPod(h2, 'vx-b');
  await c.waitConverged();
  await pingOk(a.ns, b.ip);
  const from = c.logs(h1).length;
  nsExec(h1.sim, 'ip', 'link', 'del', 'berth.vxlan');
  // Event passes don't look the devices up; the one this pod change triggers
  // fails on the missing device, and its retry pass recreates it.
  const nudge = await c.plumbPod(h2, 'vx-nudge');
  const repaired = await c.waitLog(h1, (l) => l.msg === 'reconcile pass' && l.why === 'retry' && l.failed === 0, { fromLine: from });
  t.true((repaired.applied as number) >= 1, 'the retry pass put the routes back');
  t.regex(nsExec(h1.sim, 'ip', '-d', 'link', 'show', 'berth.vxlan'), /vxlan id/);
  await c.waitConverged();
  await pingOk(a.ns, b.ip);
  await pingOk(a.ns, nudge.ip);
  for (const p of [a, b, nudge]) await c.unplumbPod(p);
  await c.waitConverged();
});

test.serial('a route or FDB entry deleted behind the agent is restored by a pass', async (t) => {
  const [h1, h2] = c.hosts;
  const a = await c.plumbPod(h1, 'repair-a');
  const b = await c.plumbPod(h2, 'repair-b');
  await c.waitConverged();
  await pingOk(a.ns, b.ip);
  const from = c.logs(h1).length;
  nsExec(h1.sim, 'ip', 'route', 'del', `${b.ip}/32`);
  nsExec(h1.sim, 'bridge', 'fdb', 'del', vtepMacFor(h2.name), 'dev', 'berth.vxlan', 'dst', h2.sim.underlayIp);
  // Nothing in etcd changed; the next pass (here: the one a pod change triggers) repairs it.
  const nudge = await c.plumbPod(h2, 'repair-nudge');
  await c.waitConverged();
  const repair = await c.waitLog(h1, (l) => l.msg === 'reconcile pass' && (l.ops as number) >= 2, { fromLine: from });
  t.true((repair.applied as number) >= 2);
  await pingOk(a.ns, b.ip);
  for (const p of [a, b, nudge]) await c.unplumbPod(p);
  await c.waitConverged();
});
