/**
 * Controller against a real etcd: lifecycle, fencing, moves, concurrency
 * across two replicas, exhaustion, expiry, and the API's refusal of bad input.
 */
import test from 'ava';
import { startController, type RunningController } from '../controller/app';
import { ControllerClient } from '../common/controller-client';
import { isBerthError, type BerthError } from '../common/errors';
import { keys } from '../common/keys';
import { silentLogger } from '../common/log';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { eventually } from '../sim/eventually';

let etcd: EtcdServer;
let a: RunningController;
let b: RunningController;
let ca: ControllerClient;
let cb: ControllerClient;
let clock = Date.parse('2026-11-23T10:00:00.000Z');
const now = () => clock;

test.before(async () => {
  etcd = await startEtcd();
  const opts = { etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', sweepMs: 100, log: silentLogger, now };
  a = await startController({ ...opts, replicaId: 'replica-a' });
  b = await startController({ ...opts, replicaId: 'replica-b' });
  ca = new ControllerClient({ url: a.url });
  cb = new ControllerClient({ url: b.url });
});

test.after.always(async () => {
  ca?.close(); cb?.close();
  await a?.stop(); await b?.stop();
  await etcd?.stop();
});

async function rejects(t: any, p: Promise<unknown>, kind: string): Promise<BerthError> {
  const e = await t.throwsAsync(p);
  t.true(isBerthError(e), String(e));
  t.is((e as BerthError).kind, kind, (e as Error).message);
  return e as BerthError;
}

const bindReq = (identity: string, containerId: string, host = 'node-a') => ({ identity, containerId, host, ifName: 'eth0' });

test.serial('lifecycle: bind, release, held, rebind same IP, expiry frees it', async (t) => {
  await ca.createPool({ name: 'life', cidr: '198.18.10.0/24', holdSeconds: 60 });
  const first = await ca.bind('life', bindReq('k8s/web/db-0', 'c1'));
  t.true(first.allocated);
  t.is(first.gateway, '198.18.10.1');
  t.is(first.prefix, 24);
  const again = await cb.bind('life', bindReq('k8s/web/db-0', 'c1'));
  t.false(again.allocated);
  t.is(again.lease.ip, first.lease.ip);

  const rel = await cb.release('life', { identity: 'k8s/web/db-0', containerId: 'c1' });
  t.is(rel.outcome, 'released');
  t.is(rel.lease?.state, 'held');
  t.is(rel.lease?.heldUntil, '2026-11-23T10:01:00.000Z');

  const rebound = await ca.bind('life', bindReq('k8s/web/db-0', 'c2', 'node-b'));
  t.is(rebound.lease.ip, first.lease.ip);
  t.is(rebound.lease.binding?.host, 'node-b');
  t.true(BigInt(rebound.lease.revision) > BigInt(first.lease.revision), 'fencing token grows');

  await ca.release('life', { ip: first.lease.ip, containerId: 'c2' });
  clock += 59_000;
  await a.expirer.sweepOnce(); await b.expirer.sweepOnce();
  t.is((await ca.lease(first.lease.ip)).state, 'held', 'not freed before its hold lapses');
  clock += 2_000;
  await eventually(async () => {
    const gone = await ca.lease(first.lease.ip, 'life').then(() => false, (e) => isBerthError(e) && e.kind === 'LeaseNotFound');
    if (!gone) throw new Error('still leased');
  }, { what: 'expiry' });
  const hist = await ca.history({ ip: first.lease.ip });
  t.deepEqual(hist.events.map((e) => e.kind), ['allocated', 'released', 'moved', 'released', 'expired']);
  const who = await ca.history({ ip: first.lease.ip, at: new Date(clock - 30_000).toISOString() });
  t.is(who.events[0].kind, 'released');
  t.is(who.events[0].identity, 'k8s/web/db-0');
});

test.serial('exactly one replica is the expirer', async (t) => {
  await eventually(() => { if (a.expirer.isLeader === b.expirer.isLeader) throw new Error('no single leader'); });
  t.not(a.expirer.isLeader, b.expirer.isLeader);
});

test.serial('a stale release from an older container is ignored', async (t) => {
  await ca.createPool({ name: 'fence', cidr: '198.18.11.0/24' });
  const l1 = await ca.bind('fence', bindReq('k8s/a/p', 'old'));
  await ca.release('fence', { identity: 'k8s/a/p', containerId: 'old' });
  const l2 = await cb.bind('fence', bindReq('k8s/a/p', 'new'));
  t.is(l2.lease.ip, l1.lease.ip);
  const stale = await ca.release('fence', { identity: 'k8s/a/p', containerId: 'old' });
  t.is(stale.outcome, 'stale');
  const cur = await cb.lease(l1.lease.ip);
  t.is(cur.state, 'bound');
  t.is(cur.binding?.containerId, 'new');
  t.is(cur.revision, l2.lease.revision);
});

test.serial('a bound lease moves only when released or its host is declared dead, not while its agent is absent', async (t) => {
  await ca.createPool({ name: 'move', cidr: '198.18.12.0/24' });
  const etc = etcd.client();
  // As an agent registers: a persistent record, and liveness on an etcd lease.
  await etc.put(keys.host('node-m')).value(JSON.stringify({ name: 'node-m', underlayIp: '198.19.0.11', vtepMac: '02:00:00:00:00:01', vni: 1, pool: 'move', registeredAt: new Date().toISOString() }));
  const hostLease = etc.lease(60);
  await hostLease.put(keys.alive('node-m')).value(JSON.stringify({ host: 'node-m', since: new Date().toISOString() }));
  await eventually(async () => { if (!(await ca.hosts()).hosts.some((h) => h.name === 'node-m' && h.alive)) throw new Error('host not seen'); });
  const l = await ca.bind('move', bindReq('k8s/a/mover', 'c1', 'node-m'));
  const e = await rejects(t, cb.bind('move', bindReq('k8s/a/mover', 'c2', 'node-b')), 'LeaseHeldElsewhere');
  t.regex(e.details ?? '', /container c1 on host node-m/);
  await rejects(t, ca.forgetHost('node-m'), 'HostAlive');
  // The agent goes away (its lease ends): the record stays, and so does the binding.
  await hostLease.revoke();
  t.false((await ca.hosts()).hosts.find((h) => h.name === 'node-m')?.alive);
  const absent = await rejects(t, cb.bind('move', bindReq('k8s/a/mover', 'c2', 'node-b')), 'LeaseHeldElsewhere');
  t.regex(absent.details ?? '', /not responding.*hosts forget node-m/);
  t.is((await ca.lease(l.lease.ip)).binding?.host, 'node-m');
  // Declared dead by an operator: the lease is held with a reason, then it can move.
  const f = await cb.forgetHost('node-m');
  t.like(f, { host: 'node-m', orphaned: 1, pinned: 0, interrupted: false });
  // Read through the client that forgot it: its reads wait for the revision its write answered with.
  t.false((await cb.hosts()).hosts.some((h) => h.name === 'node-m'), 'the record is gone');
  const held = await cb.lease(l.lease.ip);
  t.is(held.state, 'held');
  t.is(held.lastBinding?.host, 'node-m');
  const moved = await cb.bind('move', bindReq('k8s/a/mover', 'c2', 'node-b'));
  t.is(moved.lease.ip, l.lease.ip);
  t.is(moved.lease.binding?.host, 'node-b');
  const hist = await ca.history({ identity: 'k8s/a/mover' });
  t.deepEqual(hist.events.map((x) => x.kind), ['allocated', 'orphaned', 'moved']);
  t.like(hist.events[1], { actor: 'operator', reason: 'host node-m forgotten by an operator', oldState: 'bound', newState: 'held' });
  await rejects(t, ca.forgetHost('node-m'), 'HostNotFound');
  await rejects(t, ca.forgetHost('Not_A_Host'), 'InvalidRequest');
});

test.serial('a bind right after a release on another replica never sees a stale holder', async (t) => {
  await ca.createPool({ name: 'pingpong', cidr: '198.18.13.0/24' });
  const etc = etcd.client();
  for (const name of ['node-a', 'node-b']) {
    await etc.put(keys.host(name)).value(JSON.stringify({ name, underlayIp: '198.19.0.11', vtepMac: '02:00:00:00:00:01', vni: 1, pool: 'pingpong', registeredAt: new Date().toISOString() }));
  }
  await eventually(async () => { if ((await ca.hosts()).hosts.length < 2) throw new Error('hosts not seen'); });
  const first = await ca.bind('pingpong', bindReq('k8s/a/pp', 'c0', 'node-a'));
  for (let i = 1; i <= 40; i++) {
    const [from, to] = i % 2 ? [ca, cb] : [cb, ca];
    const rel = await from.release('pingpong', { identity: 'k8s/a/pp', containerId: `c${i - 1}` });
    t.is(rel.outcome, 'released');
    const moved = await to.bind('pingpong', bindReq('k8s/a/pp', `c${i}`, i % 2 ? 'node-b' : 'node-a'));
    t.is(moved.lease.ip, first.lease.ip);
  }
  for (const name of ['node-a', 'node-b']) await etc.delete().key(keys.host(name));
});

test.serial('two replicas, 500 concurrent allocations, 500 distinct addresses', async (t) => {
  await ca.createPool({ name: 'race', cidr: '198.18.16.0/22' });
  const results = await Promise.all(Array.from({ length: 500 }, (_, i) =>
    (i % 2 ? ca : cb).bind('race', bindReq(`k8s/race/pod-${i}`, `c-${i}`, i % 2 ? 'node-a' : 'node-b'))));
  const ips = new Set(results.map((r) => r.lease.ip));
  t.is(ips.size, 500);
  const stored = await ca.leases({ pool: 'race' });
  t.is(stored.leases.length, 500);
  t.is(new Set(stored.leases.map((l) => l.ip)).size, 500);
  t.is(new Set(stored.leases.map((l) => l.identity)).size, 500);
  // Asking again from the other replica returns the same address for every identity.
  const again = await Promise.all(results.slice(0, 50).map((r, i) => (i % 2 ? cb : ca).bind('race', bindReq(r.lease.identity, r.lease.binding!.containerId, r.lease.binding!.host))));
  t.deepEqual(again.map((r) => r.lease.ip), results.slice(0, 50).map((r) => r.lease.ip));
});

test.serial('two replicas racing for one identity agree on one address', async (t) => {
  await ca.createPool({ name: 'same', cidr: '198.18.20.0/24' });
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? ca : cb).bind('same', bindReq('k8s/x/only', 'c1'))));
  t.is(new Set(rs.map((r) => r.lease.ip)).size, 1);
  t.is(rs.filter((r) => r.allocated).length, 1);
});

test.serial('pool exhaustion gives PoolExhausted', async (t) => {
  await ca.createPool({ name: 'tiny', cidr: '198.18.21.0/29' });
  const got = await Promise.all(Array.from({ length: 5 }, (_, i) => ca.bind('tiny', bindReq(`t-${i}`, `c${i}`))));
  t.is(new Set(got.map((g) => g.lease.ip)).size, 5);
  const e = await rejects(t, cb.bind('tiny', bindReq('t-6', 'c6')), 'PoolExhausted');
  t.is(e.toBody().cniCode, 101);
  const usage = await ca.pool('tiny');
  t.like(usage, { size: 5, bound: 5, free: 0 });
});

test.serial('pin reserves an address before the workload exists', async (t) => {
  await ca.createPool({ name: 'pins', cidr: '198.18.22.0/24', holdSeconds: 0 });
  const pinned = await ca.pin('pins', { identity: 'k8s/db/db-0', ip: '198.18.22.50' });
  t.like(pinned, { ip: '198.18.22.50', state: 'held', pinned: true });
  await rejects(t, cb.bind('pins', { ...bindReq('someone', 'c1'), ip: '198.18.22.50' }), 'AddressConflict');
  const b1 = await cb.bind('pins', bindReq('k8s/db/db-0', 'c1'));
  t.is(b1.lease.ip, '198.18.22.50');
  await cb.release('pins', { identity: 'k8s/db/db-0', containerId: 'c1' });
  clock += 3600_000;
  await a.expirer.sweepOnce(); await b.expirer.sweepOnce();
  t.like(await ca.lease('198.18.22.50'), { state: 'held', pinned: true });
  await rejects(t, ca.free('pins', '198.18.22.50', false).then(() => ca.lease('198.18.22.50', 'pins')), 'LeaseNotFound');
});

test.serial('the API rejects bad input with stable codes and changes nothing', async (t) => {
  const before = (await ca.leases()).leases.length;
  const post = async (path: string, body: string) => {
    const res = await fetch(`${a.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    return { status: res.status, body: await res.json() as any };
  };
  const cases: [string, string, number, string][] = [
    ['/v1/pools', '{', 400, 'Decode'],
    ['/v1/pools', '[]', 400, 'Decode'],
    ['/v1/pools', '{"name":"Bad Name","cidr":"198.18.30.0/24"}', 400, 'InvalidRequest'],
    ['/v1/pools', '{"name":"x","cidr":"198.18.30.0/33"}', 400, 'InvalidRequest'],
    ['/v1/pools', '{"name":"x","cidr":"198.18.30.0/24","gateway":"10.0.0.1"}', 400, 'InvalidRequest'],
    ['/v1/pools', '{"name":"life","cidr":"198.18.30.0/24"}', 409, 'PoolExists'],
    ['/v1/pools/nope/bind', '{"identity":"a","host":"h","containerId":"c","ifName":"eth0"}', 404, 'PoolNotFound'],
    ['/v1/pools/life/bind', '{"identity":"a","host":"h","containerId":"c","ifName":"a-very-long-interface-name"}', 400, 'InvalidRequest'],
    ['/v1/pools/life/bind', '{"identity":"","host":"h","containerId":"c","ifName":"eth0"}', 400, 'InvalidRequest'],
    ['/v1/pools/life/bind', '{"identity":"a","host":"h","containerId":"c","ifName":"eth0","ip":"198.18.99.1"}', 400, 'InvalidRequest'],
    ['/v1/pools/life/release', '{"identity":"a"}', 400, 'InvalidRequest'],
    ['/v1/nothing-here', '{}', 404, 'NotFound'],
  ];
  for (const [path, body, status, code] of cases) {
    const r = await post(path, body);
    t.is(r.status, status, `${path} ${body}`);
    t.is(r.body.error.code, code, `${path} ${body}`);
    t.is(typeof r.body.error.msg, 'string');
    t.false(JSON.stringify(r.body).includes('    at '), 'no stack trace');
  }
  const history = await fetch(`${a.url}/v1/history?ip=198.18.10.2&at=whenever`);
  t.is(history.status, 400);
  t.is((await ca.leases()).leases.length, before);
  t.is((await ca.pools()).pools.filter((p) => p.name === 'x').length, 0);
});

test.serial('a token-protected controller refuses requests without the token', async (t) => {
  const guarded = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', token: 'sekret', log: silentLogger });
  const clients = [undefined, 'wrong', 'sekret'].map((token) => new ControllerClient({ url: guarded.url, token }));
  try {
    await rejects(t, clients[0].pools(), 'Unauthorized');
    await rejects(t, clients[1].pools(), 'Unauthorized');
    t.true((await clients[2].pools()).pools.length > 0);
  } finally {
    for (const c of clients) c.close();
    await guarded.stop();
  }
});

test.serial('an unreachable etcd gives 503 and a stable code, not a hang or a stack', async (t) => {
  const doomed = await startEtcd();
  const ctl = await startController({ etcd: { endpoints: [doomed.endpoint], callTimeoutMs: 1000 }, listen: '127.0.0.1:0', log: silentLogger });
  const client = new ControllerClient({ url: ctl.url });
  try {
    await client.createPool({ name: 'gone', cidr: '198.18.40.0/24' });
    await doomed.stop();
    const health = await fetch(`${ctl.url}/healthz`);
    t.is(health.status, 503);
    const res = await fetch(`${ctl.url}/v1/pools/gone/bind`, { method: 'POST', body: JSON.stringify(bindReq('x', 'c')), headers: { 'content-type': 'application/json' } });
    t.is(res.status, 503);
    const body = await res.json() as any;
    t.is(body.error.code, 'StoreUnavailable');
    t.is(body.error.cniCode, 108);
  } finally {
    client.close();
    await ctl.stop();
    await doomed.stop();
  }
});
