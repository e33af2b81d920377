/**
 * The agent's view of etcd and its fencing, against a real etcd: relisting
 * after compaction, re-registration after a lost host lease, and a stale
 * lower-revision binding never reaching the kernel. The first tests drive
 * EtcdSource and Reconciler in-process (so a compaction can be placed
 * exactly between list and watch); the last ones use agent processes.
 */
import test from 'ava';
import { keys } from '../common/keys';
import { silentLogger } from '../common/log';
import type { Host, LeaseView } from '../common/records';
import { desiredState, vtepMacFor } from '../agent/desired';
import { openNetlinkIn, warmThreadPool } from '../agent/kernel';
import { Reconciler } from '../agent/reconciler';
import { EtcdSource } from '../agent/source';
import { startCluster } from '../sim/cluster';
import { startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { Lab, UNDERLAY_MTU, nsExec } from '../sim/netns';

test.before(async () => {
  await warmThreadPool();
});

const pool = { name: 'p1', cidr: '198.18.20.0/24', gateway: '198.18.20.1', reserved: [], holdSeconds: 60, createdAt: '' };

function lease(ip: string, host: string): Omit<LeaseView, 'revision'> {
  return {
    pool: pool.name, ip, identity: `id-${ip}`, state: 'bound', pinned: false,
    binding: { host, containerId: `c-${ip}`, ifName: 'eth0', boundAt: '' }, createdAt: '', updatedAt: '',
  };
}

test('source relists when its watch start revision was compacted, and keeps following changes', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const client = etcd.client();
  await client.put(keys.pool(pool.name)).value(JSON.stringify(pool));
  await client.put(keys.lease(pool.name, '198.18.20.5')).value(JSON.stringify(lease('198.18.20.5', 'a')));

  let compactOnce = true;
  let changes = 0;
  const source = new EtcdSource(client, pool.name, silentLogger, {
    onChange: () => changes++,
    backoffMs: { min: 10, max: 100 },
    // Between list and watch: move etcd on and compact past the listed revision,
    // so the watch from R+1 is refused exactly as after a long disconnect.
    afterList: async () => {
      if (!compactOnce) return;
      compactOnce = false;
      await client.put(keys.lease(pool.name, '198.18.20.6')).value(JSON.stringify(lease('198.18.20.6', 'b')));
      // Compacting at R keeps R itself, so compact at R+2 to lose R+1 for sure.
      const r = await client.put('/unrelated').value('x').exec();
      await client.kv.compact({ revision: r.header.revision, physical: true });
    },
  });
  t.teardown(() => source.close());
  await source.start();
  await eventually(() => { if (source.relists < 2) throw new Error(`relists=${source.relists}`); }, { what: 'a relist after compaction' });
  await eventually(() => { if (!source.snapshot().leases.some((l) => l.ip === '198.18.20.6')) throw new Error('missing .6'); });

  await client.put(keys.lease(pool.name, '198.18.20.7')).value(JSON.stringify(lease('198.18.20.7', 'c')));
  await client.delete().key(keys.lease(pool.name, '198.18.20.5'));
  await eventually(() => {
    const ips = source.snapshot().leases.map((l) => l.ip).sort();
    if (ips.join() !== '198.18.20.6,198.18.20.7') throw new Error(ips.join());
  }, { what: 'watch events after the relist' });
  t.true(changes >= 3);
  t.is(source.relists, 2);
});

test('a stale lower-revision binding is never programmed, even when it names this host', async (t) => {
  const lab = new Lab();
  t.teardown(() => lab.teardown());
  const a = lab.host('a');
  const b = lab.host('b');
  const hosts: Host[] = [a, b].map((s, i) => ({
    name: `h${i}`, underlayIp: s.underlayIp, vtepMac: vtepMacFor(`h${i}`), vni: 4242, pool: pool.name, registeredAt: '',
  }));
  // Two claims on one address: the old binding on h0 (revision 5) and the newer one on h1 (revision 9).
  const stale: LeaseView = { ...lease('198.18.20.9', 'h0'), revision: '5' };
  const fresh: LeaseView = { ...lease('198.18.20.9', 'h1'), revision: '9' };
  const nl = openNetlinkIn(a.path);
  t.teardown(() => nl.socket.close());
  const r = new Reconciler({
    netlink: nl, log: silentLogger,
    desired: () => desiredState({ self: 'h0', hosts, leases: [fresh, stale], pool, underlayMtu: UNDERLAY_MTU }),
  });
  const pass = await r.runPass();
  t.is(pass.failed, 0);
  t.false(pass.plan.some((o) => o.kind === 'route' && o.route.dev === 'berth0'), 'no local route for the stale claim');
  t.regex(nsExec(a, 'ip', 'route', 'show', '198.18.20.9/32'), new RegExp(`via ${b.underlayIp.replace(/\./g, '\\.')} dev berth\\.vxlan`));
  t.is((await r.runPass()).ops, 0);
});

test('agents converge after an etcd compaction, and a revoked host lease re-registers without touching routes', async (t) => {
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.21.0/24' });
  t.teardown(() => c.teardown());
  const [h1, h2] = c.hosts;
  const client = c.etcd.client();
  const p1 = await c.plumbPod(h1, 'cmp-1');
  const rev = (await client.get(keys.host(h1.name)).exec()).header.revision;
  await client.kv.compact({ revision: rev, physical: true });
  const p2 = await c.plumbPod(h2, 'cmp-2');
  await c.waitConverged();
  await eventually(() => { if (!c.ping(p1.ns, p2.ip)) throw new Error('no ping'); }, { what: 'ping across hosts' });

  // Revoke host-1's registration lease behind its back: its alive key vanishes
  // (the host record, on no lease, stays, so no peer drops a route), and the
  // agent must notice and register again.
  const record = (await client.get(keys.host(h1.name)).exec()).kvs[0];
  t.is(record.lease, '0', 'the host record is persistent');
  const kv = (await client.get(keys.alive(h1.name)).exec()).kvs[0];
  const from = c.logs(h1).length;
  await client.leaseClient.leaseRevoke({ ID: kv.lease });
  t.is((await client.get(keys.host(h1.name)).exec()).kvs[0]?.mod_revision, record.mod_revision, 'the record outlives the lease');
  await c.waitLog(h1, (l) => l.msg === 'host registered', { fromLine: from, timeoutMs: 15_000 });
  await eventually(async () => {
    const now = (await client.get(keys.alive(h1.name)).exec()).kvs[0];
    if (!now || now.lease === kv.lease) throw new Error('not re-registered');
  }, { timeoutMs: 15_000, what: 'a new host lease' });
  t.is((await client.get(keys.host(h1.name)).exec()).kvs[0]?.mod_revision, record.mod_revision, 'an unchanged record is not rewritten');
  // Either key deleted behind the agent's back is put back at once: the alive
  // key on the current lease, the record (as when the host was forgotten) as it was.
  const from2 = c.logs(h1).length;
  await client.delete().key(keys.alive(h1.name));
  await c.waitLog(h1, (l) => l.msg === 'alive key restored', { fromLine: from2 });
  t.is((await client.get(keys.alive(h1.name)).exec()).kvs.length, 1);
  await client.delete().key(keys.host(h1.name));
  await c.waitLog(h1, (l) => l.msg === 'host record written' && l.was === 'missing', { fromLine: from2 });
  t.like(JSON.parse((await client.get(keys.host(h1.name)).exec()).kvs[0].value.toString()), { name: h1.name, underlayIp: h1.sim.underlayIp });
  await c.waitConverged();
  await eventually(() => { if (!c.ping(p2.ns, p1.ip)) throw new Error('no ping'); }, { what: 'ping after re-registration' });
  t.pass();
});
