/**
 * The controller's watch-fed view against a real etcd: it follows writes, and
 * when its watch is lost after a compaction it relists and misses nothing.
 */
import test, { type ExecutionContext } from 'ava';
import { keys } from '../common/keys';
import { silentLogger } from '../common/log';
import { ClusterView } from '../controller/view';
import { LeaseStore } from '../controller/store';
import { startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';

const lease = (ip: string, identity: string) => JSON.stringify({ pool: 'v', ip, identity, state: 'bound', pinned: false, createdAt: '', updatedAt: '' });

test('the view follows writes and recovers from a lost watch after compaction', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const client = etcd.client();
  await client.put(keys.lease('v', '198.18.50.2')).value(lease('198.18.50.2', 'a'));
  const view = new ClusterView(client, silentLogger);
  await view.start();
  t.teardown(() => view.close());
  t.true(view.leasesOf('v').has('198.18.50.2'));

  await client.put(keys.lease('v', '198.18.50.3')).value(lease('198.18.50.3', 'b'));
  await eventually(() => { if (!view.leasesOf('v').has('198.18.50.3')) throw new Error('not seen'); });

  // Changes made while the watch is gone, then history compacted away.
  const watcher = (view as unknown as { watcher: { removeAllListeners(): void; cancel(): Promise<void>; emit(e: string, err: Error): void } }).watcher;
  watcher.removeAllListeners();
  await watcher.cancel();
  await client.delete().key(keys.lease('v', '198.18.50.2'));
  const put = await client.put(keys.lease('v', '198.18.50.4')).value(lease('198.18.50.4', 'c'));
  await client.kv.compact({ revision: put.header.revision, physical: true });
  await (view as unknown as { relistSoon(why: string): Promise<void> }).relistSoon('test: watch lost after compaction');

  t.false(view.leasesOf('v').has('198.18.50.2'), 'a delete during the gap is seen');
  t.true(view.leasesOf('v').has('198.18.50.4'), 'a put during the gap is seen');
  t.is(view.revision, BigInt(put.header.revision));
  await client.put(keys.lease('v', '198.18.50.5')).value(lease('198.18.50.5', 'd'));
  await eventually(() => { if (!view.leasesOf('v').has('198.18.50.5')) throw new Error('watch not resumed'); });
});

/** A store over its own view and etcd, so a test can make the view lag on purpose. */
async function storeWithView(t: ExecutionContext) {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const client = etcd.client();
  const view = new ClusterView(client, silentLogger);
  await view.start();
  t.teardown(() => view.close());
  const store = new LeaseStore(client, view, silentLogger);
  return { client, view, store };
}

test('a release decided on a stale view never frees a newer binding', async (t) => {
  const { client, view, store } = await storeWithView(t);
  await store.createPool({ name: 'sv', cidr: '198.18.52.0/24' });
  const first = await store.bind('sv', { identity: 'k8s/a/p', host: 'h1', containerId: 'old', ifName: 'eth0' });
  const ip = first.lease.ip;
  await eventually(() => { if (view.leasesOf('sv').get(ip)?.binding?.containerId !== 'old') throw new Error('bind not seen'); });
  const staleCopy = view.leasesOf('sv').get(ip)!;
  await store.bind('sv', { identity: 'k8s/a/p', host: 'h1', containerId: 'new', ifName: 'eth0' });
  await eventually(() => { if (view.leasesOf('sv').get(ip)?.binding?.containerId !== 'new') throw new Error('rebind not seen'); });
  // The view falls behind: it still shows the old container's binding.
  view.leasesOf('sv').set(ip, staleCopy);
  const r = await store.release('sv', { identity: 'k8s/a/p', containerId: 'old' });
  t.not(r.outcome, 'released');
  const now = await client.get(keys.lease('sv', ip)).json() as { state: string; binding?: { containerId: string } };
  t.like(now, { state: 'bound', binding: { containerId: 'new' } });
  // And a release the view gets right still goes through.
  t.is((await store.release('sv', { identity: 'k8s/a/p', containerId: 'new' })).outcome, 'released');
});

test('a bind the view calls "already yours" is confirmed in etcd, so a release it has not seen is undone', async (t) => {
  const { client, view, store } = await storeWithView(t);
  await store.createPool({ name: 'sb', cidr: '198.18.53.0/24', holdSeconds: 60 });
  const req = { identity: 'k8s/a/q', host: 'h1', containerId: 'c1', ifName: 'eth0' };
  const first = await store.bind('sb', req);
  const ip = first.lease.ip;
  await eventually(() => { if (view.leasesOf('sb').get(ip)?.state !== 'bound') throw new Error('bind not seen'); });
  const staleCopy = view.leasesOf('sb').get(ip)!;
  t.is((await store.release('sb', { identity: req.identity, containerId: 'c1' })).outcome, 'released');
  await eventually(() => { if (view.leasesOf('sb').get(ip)?.state !== 'held') throw new Error('release not seen'); });
  // The view falls behind: it still shows c1's binding, while etcd holds the lease for the identity.
  view.leasesOf('sb').set(ip, staleCopy);
  const again = await store.bind('sb', req);
  t.is(again.lease.ip, ip);
  const now = await client.get(keys.lease('sb', ip)).json() as { state: string; binding?: { containerId: string } };
  t.like(now, { state: 'bound', binding: { containerId: 'c1' } }, 'bound in etcd, not only in the answer');
});

test('a bind the view calls "another interface of yours" is confirmed in etcd before InterfaceConflict', async (t) => {
  const { client, view, store } = await storeWithView(t);
  await store.createPool({ name: 'si', cidr: '198.18.54.0/24', holdSeconds: 60 });
  const req = { identity: 'k8s/a/r', host: 'h1', containerId: 'c1', ifName: 'eth0', network: 'berth' };
  const ip = (await store.bind('si', req)).lease.ip;
  await eventually(() => { if (view.leasesOf('si').get(ip)?.state !== 'bound') throw new Error('bind not seen'); });
  const staleCopy = view.leasesOf('si').get(ip)!;
  await t.throwsAsync(store.bind('si', { ...req, ifName: 'net1' }), { message: /another interface/ }, 'while eth0 holds it, net1 is refused');
  t.is((await store.release('si', { identity: req.identity, containerId: 'c1', ifName: 'net1' })).outcome, 'stale', "net1's release leaves eth0's lease");
  t.is((await store.release('si', { identity: req.identity, containerId: 'c1', ifName: 'eth0' })).outcome, 'released');
  await eventually(() => { if (view.leasesOf('si').get(ip)?.state !== 'held') throw new Error('release not seen'); });
  // The view falls behind: it still shows eth0's binding, while etcd has it held.
  view.leasesOf('si').set(ip, staleCopy);
  const net1 = await store.bind('si', { ...req, ifName: 'net1' });
  t.is(net1.lease.ip, ip);
  const now = await client.get(keys.lease('si', ip)).json() as { state: string; binding?: { ifName: string; network?: string } };
  t.like(now, { state: 'bound', binding: { ifName: 'net1', network: 'berth' } });
});

test('the view\'s per-pool and per-host counters always equal a recount of its leases', async (t) => {
  const { client, view } = await storeWithView(t);
  const states = ['bound', 'held'] as const;
  let last = 0n;
  // A deterministic mix of creates, state changes, host moves, pins and deletes.
  for (let i = 0; i < 300; i++) {
    const ip = `198.18.54.${(i * 7) % 40 + 2}`;
    const key = keys.lease('cnt', ip);
    if (i % 11 === 5) { last = BigInt((await client.delete().key(key)).header.revision); continue; }
    const state = states[(i * 5) % 2];
    const value = { pool: 'cnt', ip, identity: `id-${ip}`, state, pinned: i % 13 === 0, createdAt: '', updatedAt: '',
      ...(state === 'bound' ? { binding: { host: `h${i % 3}`, containerId: `c${i}`, ifName: 'eth0', boundAt: '' } } : {}) };
    last = BigInt((await client.put(key).value(JSON.stringify(value))).header.revision);
  }
  await view.caughtUp(last);
  const recount = () => {
    const c = { bound: 0, held: 0, pinned: 0 };
    const hosts = new Map<string, number>();
    for (const l of view.leasesOf('cnt').values()) {
      if (l.state === 'bound') c.bound++; else c.held++;
      if (l.pinned) c.pinned++;
      if (l.binding) hosts.set(l.binding.host, (hosts.get(l.binding.host) ?? 0) + 1);
    }
    return { c, hosts };
  };
  const { c, hosts } = recount();
  t.deepEqual(view.countsOf('cnt'), c);
  for (const h of ['h0', 'h1', 'h2']) t.is(view.leasesOnHost(h), hosts.get(h) ?? 0, h);
  // And the same after a relist rebuilds them from scratch.
  await (view as unknown as { relistSoon(why: string): Promise<void> }).relistSoon('test');
  t.deepEqual(view.countsOf('cnt'), c);
});
