/**
 * A replica decides from its watch-fed view, which can be a moment behind
 * etcd. Against a real etcd and two replicas: a write committed elsewhere is
 * never the reason for a refusal or a wrong allocation on this one. The
 * write goes straight to etcd and replica a's store is called in the same
 * turn of the event loop as the write's answer, before a's watch connection
 * can deliver the event: the window a write acknowledged by another replica
 * leaves, made as wide as it gets.
 */
import test from 'ava';
import { keys } from '../common/keys';
import type { Lease, Pool } from '../common/records';
import { contains, parseCidr } from '../common/cidr';
import { startReplicas, type Replicas } from './harness/replicas';

let r: Replicas;
let clock = Date.parse('2026-11-26T01:00:00.000Z');
const now = () => clock;

test.before(async () => { r = await startReplicas(now); });
test.after.always(async () => { await r?.stop(); });

const bindReq = (identity: string, containerId: string, o: Record<string, unknown> = {}) =>
  ({ identity, containerId, host: 'node-a', ifName: 'eth0', source: 'k8s' as const, ...o });

/** What `leases free` commits, done straight in etcd: the replicas only learn of it from their watch. */
async function freeInEtcd(pool: string, ip: string): Promise<void> {
  const etc = r.etcd.client();
  const l = JSON.parse((await etc.get(keys.lease(pool, ip)).string()) as string) as Lease;
  // One transaction, as free commits it: the watch delivers both deletes together.
  await etc.if(keys.lease(pool, ip), 'Version', '>', 0)
    .then(etc.delete().key(keys.lease(pool, ip)), etc.delete().key(keys.identity(pool, l.identity))).commit();
}

test.serial('a named address freed elsewhere a moment ago is bound, not refused as taken', async (t) => {
  await r.ca.createPool({ name: 'sv-req', cidr: '198.18.90.0/24', holdSeconds: 3600 });
  for (let round = 0; round < 20; round++) {
    const ip = `198.18.90.${10 + round}`;
    await r.ca.bind('sv-req', bindReq(`k8s/sv/old-${round}`, `o${round}`, { ip }));
    await r.ca.release('sv-req', { identity: `k8s/sv/old-${round}`, containerId: `o${round}` });
    await freeInEtcd('sv-req', ip);
    const b = await r.a.store.bind('sv-req', bindReq(`k8s/sv/new-${round}`, `n${round}`, { ip }));
    t.is(b.lease.ip, ip, `round ${round}`);
  }
});

test.serial('a full pool with an address freed elsewhere a moment ago binds, not PoolExhausted', async (t) => {
  // A /29 leaves 5 addresses besides the gateway.
  await r.ca.createPool({ name: 'sv-full', cidr: '198.18.91.0/29', holdSeconds: 3600 });
  const ips: string[] = [];
  for (let i = 0; i < 5; i++) ips.push((await r.ca.bind('sv-full', bindReq(`k8s/full/p-${i}`, `c${i}`))).lease.ip);
  for (let round = 0; round < 20; round++) {
    const victim = ips[round % ips.length];
    await freeInEtcd('sv-full', victim);
    const b = await r.a.store.bind('sv-full', bindReq(`k8s/full/q-${round}`, `q${round}`));
    t.is(b.lease.ip, victim, `round ${round}`);
    ips[round % ips.length] = b.lease.ip;
  }
  // Still a real refusal when the pool is full.
  const e = await t.throwsAsync(r.ca.bind('sv-full', bindReq('k8s/full/extra', 'x')));
  t.is((e as { kind?: string }).kind, 'PoolExhausted');
});

test.serial('a pool deleted and created again with another prefix elsewhere is never allocated from the old one', async (t) => {
  for (let round = 0; round < 20; round++) {
    const [from, to] = round % 2 ? ['198.18.92.0/24', '198.18.93.0/24'] : ['198.18.93.0/24', '198.18.92.0/24'];
    if (round === 0) await r.ca.createPool({ name: 'sv-again', cidr: from, holdSeconds: 0 });
    const old = JSON.parse((await r.etcd.client().get(keys.pool('sv-again')).string()) as string) as Pool;
    t.is(old.cidr, from);
    // Replace it in one transaction, as a delete and a create would leave it.
    const next: Pool = { ...old, cidr: to, gateway: to.replace('.0/24', '.1') };
    await r.etcd.client().put(keys.pool('sv-again')).value(JSON.stringify(next)).exec();
    const b = await r.a.store.bind('sv-again', bindReq(`k8s/again/p-${round}`, `c${round}`));
    t.true(contains(parseCidr(to), b.lease.ip), `round ${round}: ${b.lease.ip} is outside ${to}`);
    t.is(b.gateway, next.gateway, `round ${round}`);
    await r.ca.release('sv-again', { identity: `k8s/again/p-${round}`, containerId: `c${round}` });
  }
});

test.serial('pin answers PoolExhausted, not AddressConflict, when the last address was taken elsewhere', async (t) => {
  await r.ca.createPool({ name: 'sv-pin', cidr: '198.18.94.0/29', holdSeconds: 3600 });
  for (let i = 0; i < 4; i++) await r.ca.bind('sv-pin', bindReq(`k8s/pin/p-${i}`, `c${i}`));
  for (let round = 0; round < 10; round++) {
    // The one free address, learnt by pinning it and freeing it again.
    const probe = await r.ca.pin('sv-pin', { identity: `probe-${round}` });
    await r.ca.free('sv-pin', probe.ip);
    const etc = r.etcd.client();
    const taken: Lease = { pool: 'sv-pin', ip: probe.ip, identity: `elsewhere-${round}`, state: 'held', pinned: true, createdAt: '', updatedAt: '' };
    await etc.if(keys.lease('sv-pin', probe.ip), 'Version', '==', 0)
      .then(etc.put(keys.lease('sv-pin', probe.ip)).value(JSON.stringify(taken)), etc.put(keys.identity('sv-pin', taken.identity)).value(JSON.stringify({ ip: probe.ip }))).commit();
    const e = await t.throwsAsync(r.a.store.pin('sv-pin', { identity: `late-${round}` }));
    t.is((e as { kind?: string }).kind, 'PoolExhausted', `round ${round}: the only candidate is taken: exhausted, not AddressConflict`);
    await r.ca.free('sv-pin', probe.ip);
  }
});

test.serial('forgetting a host uses the hold set a moment ago on the other replica', async (t) => {
  await r.ca.createPool({ name: 'sv-host', cidr: '198.18.95.0/24', holdSeconds: 3600 });
  const host = { name: 'node-z', underlayIp: '198.19.0.77', vtepMac: '02:00:00:00:00:77', vni: 1, pool: 'sv-host', registeredAt: new Date(clock).toISOString() };
  await r.etcd.client().put(keys.host('node-z')).value(JSON.stringify(host)).exec();
  const bound = await r.ca.bind('sv-host', bindReq('k8s/host/db-0', 'c1', { host: 'node-z' }));
  const before = r.a.store.view.pools.get('sv-host');
  await r.cb.updatePool('sv-host', { holdSeconds: 60 });
  // Replica a's view held back, as a watch event still in flight would.
  if (before) r.a.store.view.pools.set('sv-host', before);
  const f = await r.ca.forgetHost('node-z');
  t.like(f, { orphaned: 1, interrupted: false });
  const held = JSON.parse((await r.etcd.client().get(keys.lease('sv-host', bound.lease.ip)).string()) as string) as Lease;
  t.is(held.state, 'held');
  t.is(held.heldUntil, new Date(clock + 60_000).toISOString());
});
