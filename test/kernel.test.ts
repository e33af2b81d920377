/**
 * The agent's kernel layer against real network namespaces: setns + netlink,
 * device helpers, and observe -> desired -> plan -> apply across two
 * simulated hosts joined by VXLAN. Needs root; touches only bth-* namespaces.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Host, LeaseView } from '../common/records';
import { desiredState, vtepMacFor, type Desired } from '../agent/desired';
import { planChanges } from '../agent/plan';
import { createVeth, ensureAddress, ensureBridge, ensureVxlan, getLink, listAddresses, setUp } from '../agent/kernel/links';
import { openNetnsFd, warmThreadPool, withNetns, writeSysctl } from '../agent/kernel/netns';
import { isErrno } from '../agent/kernel/nl';
import { attachPod, detachPod } from '../agent/kernel/pod';
import { apply, observe } from '../agent/kernel/state';
import { eventually } from '../sim/eventually';
import { Lab, UNDERLAY_MTU, ip, nsExec, tcpProbe, type SimHost } from '../sim/netns';

const POOL = { name: 'default', cidr: '198.18.0.0/16', gateway: '198.18.0.1' };

function newLab(t: ExecutionContext): Lab {
  const lab = new Lab();
  t.teardown(() => lab.teardown());
  return lab;
}

/** Every thread of this process (main + libuv pool + V8) must stay in our own netns. */
function threadNetns(): Set<string> {
  return new Set(fs.readdirSync('/proc/self/task').map((tid) => fs.readlinkSync(`/proc/self/task/${tid}/ns/net`)));
}

test.before(async () => {
  await warmThreadPool();
});

test('veth peer is born inside the pod netns and configured there through withNetns', async (t) => {
  const lab = newLab(t);
  const h = lab.host('h');
  const pod = lab.pod('p');
  const before = threadNetns();

  await withNetns(h.path, async (host) => {
    const fd = openNetnsFd(pod.path);
    try {
      const hv = await createVeth(host, { hostName: `v${lab.id}`, peerName: 'eth0', peerNetnsFd: fd, mtu: 1400 });
      await setUp(host, hv);
    } finally {
      fs.closeSync(fd);
    }
  });
  await withNetns(pod.path, async (p) => {
    const eth = await getLink(p, 'eth0');
    t.truthy(eth, 'peer exists inside the pod netns');
    await ensureAddress(p, eth!.index, '198.18.0.42/32');
    await ensureAddress(p, eth!.index, '198.18.0.42/32'); // idempotent
    await setUp(p, eth!);
    t.deepEqual((await listAddresses(p, eth!.index)).map((a) => a.cidr), ['198.18.0.42/32']);
  });

  t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'eth0'), /inet 198\.18\.0\.42\/32/);
  t.regex(nsExec(pod, 'ip', '-o', 'link', 'show', 'dev', 'eth0'), /mtu 1400/);
  t.regex(nsExec(h, 'ip', '-o', 'link', 'show', `v${lab.id}`), /state UP|LOWER_UP/);
  t.throws(() => ip('link', 'show', `v${lab.id}`), undefined, 'nothing leaked into the root netns');
  t.deepEqual(threadNetns(), before, 'no thread was left in a foreign netns');
});

test('withNetns accepts /proc/PID/ns/net and sockets see only their own namespace', async (t) => {
  const lab = newLab(t);
  const pod = lab.pod('p');
  nsExec(pod, 'ip', 'link', 'add', 'marker0', 'type', 'bridge'); // no dummy module on this kernel
  const sleeper = spawn('ip', ['netns', 'exec', pod.name, 'sleep', '60'], { stdio: 'ignore' });
  t.teardown(() => sleeper.kill('SIGKILL'));
  await eventually(() => {
    const target = fs.readlinkSync(`/proc/${sleeper.pid}/ns/net`);
    if (target === fs.readlinkSync('/proc/self/ns/net')) throw new Error('sleeper not in pod netns yet');
  }, { what: 'sleeper to enter the pod netns' });

  const names = await withNetns(`/proc/${sleeper.pid}/ns/net`, async (s) => (await s.getLinks()).map((l) => l.attrs.ifname).sort());
  t.deepEqual(names, ['lo', 'marker0']);
});

test('writeSysctl writes inside the target netns only', (t) => {
  const lab = newLab(t);
  const h = lab.host('h'); // the harness turned forwarding on
  const own = fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
  writeSysctl(h.path, 'net/ipv4/ip_forward', '0');
  t.is(nsExec(h, 'cat', '/proc/sys/net/ipv4/ip_forward').trim(), '0');
  writeSysctl(h.path, 'net/ipv4/ip_forward', '1');
  t.is(nsExec(h, 'cat', '/proc/sys/net/ipv4/ip_forward').trim(), '1');
  t.is(fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8'), own, 'our own netns is untouched');
  t.throws(() => writeSysctl(h.path, 'kernel/panic', '1'));
});

test('entering a missing or non-netns path is a typed error', async (t) => {
  const e1 = await t.throwsAsync(withNetns('/run/netns/bth-does-not-exist', async () => 0));
  t.like(e1, { kind: 'NotFound' });
  const e2 = await t.throwsAsync(withNetns('/proc/self/ns/mnt', async () => 0));
  t.like(e2, { kind: 'InvalidRequest' });
});

test('ensureBridge and ensureVxlan are idempotent and EEXIST maps to a typed error', async (t) => {
  const lab = newLab(t);
  const h = lab.host('h');
  const spec = {
    bridge: { name: 'berth0', address: '198.18.0.1/32', mtu: 1450 },
    vxlan: { name: 'berth.vxlan', vni: 4242, local: h.underlayIp, port: 4789, mtu: 1450, mac: vtepMacFor('h') },
  };
  await withNetns(h.path, async (s) => {
    const b1 = await ensureBridge(s, spec.bridge);
    const v1 = await ensureVxlan(s, spec.vxlan);
    const b2 = await ensureBridge(s, spec.bridge);
    const v2 = await ensureVxlan(s, spec.vxlan);
    t.is(b2.index, b1.index);
    t.is(v2.index, v1.index, 'an unchanged vxlan device is not recreated');
    const v3 = await ensureVxlan(s, { ...spec.vxlan, vni: 4243 });
    t.not(v3.index, v1.index, 'a changed VNI recreates the device');
    const err = await t.throwsAsync(createVeth(s, { hostName: 'berth0', peerName: 'x', peerNetnsFd: -1, mtu: 1400 }));
    t.true(isErrno(err, 'EEXIST', 'EBADF'), String(err?.message));
  });
  const d = nsExec(h, 'ip', '-d', 'link', 'show', 'berth.vxlan');
  t.regex(d, /vxlan id 4243 local 198\.19\.0\.\d+ .*dstport 4789 nolearning/);
  t.regex(d, /mtu 1450/);
  t.regex(nsExec(h, 'ip', '-o', 'addr', 'show', 'berth0'), /inet 198\.18\.0\.1\/32/);
});

// --- two hosts ----------------------------------------------------------------------

interface Site {
  sim: SimHost;
  name: string;
}

function registry(sites: Site[]): Host[] {
  return sites.map((s) => ({
    name: s.name,
    underlayIp: s.sim.underlayIp,
    vtepMac: vtepMacFor(s.name),
    vni: 4242,
    pool: POOL.name,
    registeredAt: '2024-01-01T00:00:00Z',
  }));
}

function bound(ip: string, host: string, revision: string): LeaseView {
  return {
    pool: POOL.name,
    ip,
    identity: `pod-${ip}`,
    state: 'bound',
    pinned: false,
    binding: { host, containerId: `ctr-${ip}`, ifName: 'eth0', boundAt: '' },
    createdAt: '',
    updatedAt: '',
    revision,
  };
}

function desiredFor(site: Site, sites: Site[], leases: LeaseView[]): Desired {
  return desiredState({ self: site.name, hosts: registry(sites), leases, pool: POOL, underlayMtu: UNDERLAY_MTU });
}

/** One reconcile pass on a host: observe -> plan -> apply. Returns the plan it ran. */
async function reconcile(site: Site, desired: Desired) {
  return withNetns(site.sim.path, async (s) => {
    await ensureBridge(s, desired.devices!.bridge);
    await ensureVxlan(s, desired.devices!.vxlan);
    const ops = planChanges(desired, await observe(s));
    const res = await apply(s, ops);
    if (res.failed.length) throw res.failed[0].error;
    return ops;
  });
}

async function twoHosts(t: ExecutionContext) {
  const lab = newLab(t);
  const a: Site = { sim: lab.host('ha'), name: `a-${lab.id}` };
  const b: Site = { sim: lab.host('hb'), name: `b-${lab.id}` };
  const podA = lab.pod('pa');
  const podB = lab.pod('pb');
  const leases = [bound('198.18.0.10', a.name, '7'), bound('198.18.0.20', b.name, '8')];
  for (const [site, pod, lease] of [[a, podA, leases[0]], [b, podB, leases[1]]] as const) {
    const d = desiredFor(site, [a, b], leases);
    await reconcile(site, d); // devices first: attachPod needs the bridge
    await withNetns(site.sim.path, (s) =>
      attachPod(s, { containerId: lease.binding!.containerId, ifName: 'eth0', netns: pod.path, ip: lease.ip, gateway: POOL.gateway, mtu: d.devices!.bridge.mtu }),
    );
  }
  await lab.echoServer(podB, '198.18.0.20', 7070);
  return { lab, a, b, podA, podB, leases };
}

test('two hosts: pods reach each other across the VXLAN overlay, sources intact', async (t) => {
  const { a, b, podA, podB, leases } = await twoHosts(t);
  const seen = await eventually(() => tcpProbe(podA, '198.18.0.20', 7070), { what: 'pod A -> pod B' });
  t.is(seen, '198.18.0.10', 'pod B sees pod A’s own address (routed, no NAT)');
  // The host itself reaches a remote pod too, thanks to src = own underlay on remote routes.
  t.is(await eventually(() => tcpProbe(a.sim, '198.18.0.20', 7070)), a.sim.underlayIp);

  for (const site of [a, b]) t.deepEqual(await reconcile(site, desiredFor(site, [a, b], leases)), [], `${site.name}: converged`);
  t.regex(nsExec(a.sim, 'ip', 'route', 'show', '198.18.0.20/32'), /via 198\.19\.0\.\d+ dev berth\.vxlan proto 190 src 198\.19\.0\.\d+ onlink/);
  t.regex(nsExec(podA, 'ip', 'route'), /default via 198\.18\.0\.1 dev eth0 onlink/);
  void podB;
});

test('deleted route and FDB entry are restored by observe -> plan -> apply, then the plan is empty', async (t) => {
  const { a, b, podA, leases } = await twoHosts(t);
  await eventually(() => tcpProbe(podA, '198.18.0.20', 7070), { what: 'initial reachability' });

  nsExec(a.sim, 'ip', 'route', 'del', '198.18.0.20/32');
  nsExec(a.sim, 'bridge', 'fdb', 'del', vtepMacFor(b.name), 'dev', 'berth.vxlan', 'dst', b.sim.underlayIp);
  t.throws(() => tcpProbe(podA, '198.18.0.20', 7070), undefined, 'the break is real');

  const desired = desiredFor(a, [a, b], leases);
  const ops = await reconcile(a, desired);
  t.deepEqual(
    ops.map((o) => `${o.op} ${o.kind}`),
    ['replace fdb', 'replace route'],
  );
  t.deepEqual(await reconcile(a, desired), [], 'second pass plans nothing');
  t.is(await eventually(() => tcpProbe(podA, '198.18.0.20', 7070), { what: 'restored path' }), '198.18.0.10');
});

test('foreign routes are left alone; a released lease removes only its own route', async (t) => {
  const { a, b, podA, leases } = await twoHosts(t);
  nsExec(a.sim, 'ip', 'route', 'add', '198.18.77.0/24', 'dev', 'berth0');
  nsExec(a.sim, 'ip', 'route', 'add', '198.18.0.99/32', 'via', b.sim.underlayIp);

  const released = leases.map((l) => (l.ip === '198.18.0.20' ? { ...l, state: 'held' as const, binding: undefined } : l));
  const ops = await reconcile(a, desiredFor(a, [a, b], released));
  t.deepEqual(ops.map((o) => `${o.op} ${o.kind} ${'route' in o ? o.route.dst : ''}`), ['delete route 198.18.0.20/32']);
  const routes = nsExec(a.sim, 'ip', 'route');
  t.regex(routes, /198\.18\.77\.0\/24 dev berth0/);
  t.regex(routes, /198\.18\.0\.99 via/);
  t.notRegex(routes, /198\.18\.0\.20/);
  t.throws(() => tcpProbe(podA, '198.18.0.20', 7070));
});

test('detachPod removes the veth and route and succeeds when already gone', async (t) => {
  const { a, podA } = await twoHosts(t);
  for (let i = 0; i < 2; i++) {
    await withNetns(a.sim.path, async (s) => (await detachPod(s, { containerId: 'ctr-198.18.0.10', ifName: 'eth0', ip: '198.18.0.10' })).gone);
  }
  t.notRegex(nsExec(a.sim, 'ip', 'route'), /198\.18\.0\.10/);
  t.notRegex(nsExec(podA, 'ip', 'link'), /eth0/);
});

test('labs leave no namespaces behind', (t) => {
  const lab = new Lab();
  lab.host('x');
  lab.pod('y');
  t.is(lab.leftovers().length, 3);
  lab.teardown();
  t.deepEqual(lab.leftovers(), []);
});
