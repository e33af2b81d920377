/**
 * Pods outlive their agent (docs/agent.md "Registration and liveness"): real
 * etcd, a real controller, real agent processes in simulated hosts.
 *
 * - An agent frozen past its TTL changes no route anywhere: its pods stay
 *   reachable both ways and its leases stay bound.
 * - A host declared dead (the reaper, with a short --host-dead-after) frees
 *   its bound leases (held, pinned stay pinned, history says why); the
 *   identity then binds on another host. Its agent coming back withdraws
 *   the local pods whose lease is no longer bound there before it serves CNI.
 */
import test from 'ava';
import { vethNameFor } from '../agent/desired';
import { keys } from '../common/keys';
import type { Host } from '../common/records';
import { startCluster, type Cluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec, nsTry, type Netns } from '../sim/netns';

const pingOk = (c: Cluster, from: Netns, ip: string) =>
  eventually(() => { if (!c.ping(from, ip)) throw new Error(`${from.name} -> ${ip} unreachable`); }, { timeoutMs: 8000, what: `ping ${ip}` });

async function record(c: Cluster, host: string): Promise<Host | null> {
  const kv = (await c.etcd.client().get(keys.host(host)).exec()).kvs[0];
  return kv ? (JSON.parse(kv.value.toString()) as Host) : null;
}

const aliveKey = async (c: Cluster, host: string) => (await c.etcd.client().get(keys.alive(host)).exec()).kvs.length > 0;

test.serial('an agent frozen past its TTL changes no route: its pods stay reachable from every host and keep their leases', async (t) => {
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.44.0/24', hostTtlSeconds: 2, resyncMs: 300 });
  t.teardown(() => c.teardown());
  const [h1, h2] = c.hosts;
  const p1 = await c.plumbPod(h1, 'frozen-1');
  const p2 = await c.plumbPod(h2, 'peer-2');
  await c.waitConverged();
  await pingOk(c, p2.ns, p1.ip);

  const pid = h1.pid!;
  const leaseId = String(c.logs(h1, 'host registered').at(-1)?.leaseId);
  process.kill(pid, 'SIGSTOP');
  t.teardown(() => { try { process.kill(pid, 'SIGCONT'); } catch { /* already gone */ } });
  // Wait for the agent's etcd lease itself to expire, whatever hangs on it.
  await eventually(async () => {
    const ttl = await c.etcd.client().leaseClient.leaseTimeToLive({ ID: leaseId });
    if (Number(ttl.TTL) >= 0) throw new Error(`lease ${leaseId} still has ${ttl.TTL}s`); // -1: gone
  }, { timeoutMs: 20_000, what: 'the frozen agent\'s etcd lease to expire' });
  t.false(await aliveKey(c, h1.name));
  // Two of host-2's resync passes after the expiry: each recomputes every route
  // from its view, so a route that depended on the alive key would be gone now.
  const from = c.logs(h2).length;
  const passes = () => c.logs(h2).slice(from).filter((l) => l.msg === 'reconcile pass').length;
  await eventually(() => { if (passes() < 2) throw new Error('fewer than two passes'); }, { what: 'two resync passes on host-2' });

  t.truthy(await record(c, h1.name), 'the host record outlives the agent');
  t.false((await c.client.hosts()).hosts.find((h) => h.name === h1.name)?.alive);
  t.regex(nsExec(h2.sim, 'ip', 'route', 'show', `${p1.ip}/32`), new RegExp(`via ${h1.sim.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan`));
  await c.waitConverged({ hosts: [h2] });
  await pingOk(c, p2.ns, p1.ip);
  await pingOk(c, p1.ns, p2.ip);
  // Its lease stays where it is: an absent agent is not a dead host.
  const e = await t.throwsAsync(c.client.bind(c.pool.name, { identity: 'frozen-1', host: h2.name, containerId: 'elsewhere', ifName: 'eth0' }));
  t.regex(e?.message ?? '', /bound to another container/);
  t.is((await c.client.lease(p1.ip)).binding?.host, h1.name);

  // Thawed, the agent registers again and clears the reaper's "absent" note from its record.
  process.kill(pid, 'SIGCONT');
  await eventually(async () => {
    const r = await record(c, h1.name);
    if (!(await aliveKey(c, h1.name)) || !r || r.absent) throw new Error('not back yet');
  }, { timeoutMs: 20_000, what: 'host-1 alive again' });
  await c.waitConverged();
  await pingOk(c, p2.ns, p1.ip);
});

test.serial('a dead host\'s leases become held (pins kept), move elsewhere, and its returning agent withdraws them before serving CNI', async (t) => {
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.45.0/24', hostTtlSeconds: 2, hostDeadAfterSeconds: 4, hold: 600 });
  t.teardown(() => c.teardown());
  const [h1, h2] = c.hosts;
  await c.client.pin(c.pool.name, { identity: 'db-pinned' });
  const mover = await c.plumbPod(h1, 'web-mover');
  const pinned = await c.plumbPod(h1, 'db-pinned');
  const peer = await c.plumbPod(h2, 'peer');
  await c.waitConverged();
  await pingOk(c, peer.ns, mover.ip);

  await c.stopAgent(h1); // SIGTERM: no revoke; the alive key ends with its TTL
  const absent = await eventually(async () => {
    const h = (await c.client.hosts()).hosts.find((x) => x.name === h1.name);
    if (!h || h.alive || !h.absent) throw new Error('not marked absent');
    return h.absent;
  }, { timeoutMs: 15_000, intervalMs: 50, what: 'host-1 marked absent' });
  t.true(Date.parse(absent.deadAt) > Date.parse(absent.since));
  // While absent, nothing changed: routes stay and the pod answers.
  await pingOk(c, peer.ns, mover.ip);

  await eventually(async () => { if (await record(c, h1.name)) throw new Error('still recorded'); }, { timeoutMs: 20_000, what: 'host-1 declared dead' });
  const m = await c.client.lease(mover.ip);
  t.like(m, { state: 'held', pinned: false });
  t.is(m.lastBinding?.host, h1.name);
  t.truthy(m.heldUntil);
  const pl = await c.client.lease(pinned.ip);
  t.like(pl, { state: 'held', pinned: true });
  t.is(pl.heldUntil, undefined);
  const ev = (await c.client.history({ identity: 'web-mover' })).events.at(-1);
  t.like(ev, { kind: 'orphaned', actor: 'reaper', oldState: 'bound', newState: 'held', host: h1.name });
  t.regex(ev?.reason ?? '', /declared dead/);
  t.is((await c.client.lease(peer.ip)).state, 'bound', 'a live host\'s leases are untouched');

  // The identity binds on another host with its address, and a move is what re-routes it.
  const moved = await c.plumbPod(h2, 'web-mover');
  t.is(moved.ip, mover.ip);
  await c.waitConverged();
  await pingOk(c, peer.ns, moved.ip);
  const oldVeth = vethNameFor(mover.containerId, 'eth0');
  const pinnedVeth = vethNameFor(pinned.containerId, 'eth0');
  t.regex(nsExec(h1.sim, 'ip', '-o', 'link', 'show', oldVeth), /master berth0 .*state UP/, 'nobody withdrew it while the agent was down');

  // The agent comes back: its first pass, before the CNI socket opens, withdraws both.
  const from = c.logs(h1).length;
  await c.startAgent(h1);
  await c.waitLog(h1, (l) => l.msg === 'agent ready', { fromLine: from });
  const lines = c.logs(h1).slice(from);
  const withdrew = lines.find((l) => l.msg === 'withdrew local pods whose lease is not bound here');
  t.truthy(withdrew, 'withdrawal logged');
  t.true(lines.indexOf(withdrew!) < lines.findIndex((l) => l.msg === 'agent ready'), 'withdrawn before serving CNI');
  t.deepEqual([...(withdrew!.veths as string[])].sort(), [oldVeth, pinnedVeth].sort());
  for (const v of [oldVeth, pinnedVeth]) {
    const link = nsExec(h1.sim, 'ip', '-o', 'link', 'show', v);
    t.notRegex(link, /master berth0/, v);
    t.notRegex(link, /[<,]UP[,>]/, v);
  }
  // The stale pod has no carrier: it neither sends nor answers for the address.
  t.regex(nsExec(mover.ns, 'ip', '-o', 'link', 'show', 'eth0'), /NO-CARRIER|LOWERLAYERDOWN/);
  t.false(nsTry(mover.ns, 'ping', '-c1', '-W1', '-q', peer.ip));
  // The forgotten host registered again, and everything converges around the move.
  await eventually(async () => { if (!(await aliveKey(c, h1.name)) || !(await record(c, h1.name))) throw new Error('not registered'); }, { what: 'host-1 re-registered' });
  await c.waitConverged();
  t.regex(nsExec(h1.sim, 'ip', 'route', 'show', `${moved.ip}/32`), new RegExp(`via ${h2.sim.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan`));
  const probe = await c.plumbPod(h1, 'probe');
  await pingOk(c, probe.ns, moved.ip);
});
