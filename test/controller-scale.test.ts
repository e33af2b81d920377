/**
 * The controller past the size where one etcd read fits one gRPC message.
 * Each test seeds leases straight into a real etcd (sim/seed.ts) and talks to
 * it through clients whose receive limit is shrunk to 64 KiB, so any read of
 * a whole prefix in one message fails here the way a 100k-lease cluster
 * fails at the default 4 MiB.
 */
import test, { type ExecutionContext } from 'ava';
import { openEtcd } from '../common/etcd';
import { isBerthError } from '../common/errors';
import { ControllerClient } from '../common/controller-client';
import { keys } from '../common/keys';
import { silentLogger } from '../common/log';
import type { LeaseView } from '../common/api';
import { EtcdSource } from '../agent/source';
import { startController, type RunningController } from '../controller/app';
import { trimByAge } from '../controller/expirer';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { seedLeases } from '../sim/seed';

const SMALL = { maxReceiveBytes: 64 * 1024, pageSize: 50 };
const T0 = Date.parse('2026-11-25T10:00:00.000Z');

interface Fixture { etcd: EtcdServer; ctl: RunningController; api: ControllerClient; clock: { ms: number } }

async function fixture(t: ExecutionContext, count: number, o: { heldEvery?: number; holdSeconds?: number; sweepMs?: number; hostCheckMs?: number } = {}): Promise<Fixture> {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  await seedLeases(etcd.client(), { pool: 'big', cidr: '198.18.64.0/20', count, hosts: ['node-a', 'node-b'], heldEvery: o.heldEvery, holdSeconds: o.holdSeconds, now: T0 });
  const clock = { ms: T0 };
  const ctl = await startController({
    etcd: { endpoints: [etcd.endpoint], ...SMALL }, listen: '127.0.0.1:0', sweepMs: o.sweepMs ?? 50, log: silentLogger, now: () => clock.ms,
    ...(o.hostCheckMs !== undefined ? { hostCheckMs: o.hostCheckMs } : {}),
  });
  t.teardown(() => ctl.stop());
  const api = new ControllerClient({ url: ctl.url });
  t.teardown(() => api.close());
  return { etcd, ctl, api, clock };
}

async function listAll(api: ControllerClient, limit: number): Promise<LeaseView[]> {
  const out: LeaseView[] = [];
  let token: string | undefined;
  do {
    const page = await api.leases({ pool: 'big', limit, continue: token });
    assertPage(page.leases.length, limit);
    out.push(...page.leases);
    token = page.continue;
  } while (token !== undefined);
  return out;
}

function assertPage(n: number, limit: number): void {
  if (n > limit) throw new Error(`page of ${n} exceeds limit ${limit}`);
}

/** Range RPCs etcd has served, from its own Prometheus metrics on the client URL. */
async function rangeCalls(etcd: EtcdServer): Promise<number> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('grpc_server_handled_total{') && line.includes('grpc_method="Range"')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

test('start-up, listing, history, expiry and an agent\'s lease list all work when no prefix fits one message', async (t) => {
  const { etcd, ctl, api, clock } = await fixture(t, 1500, { heldEvery: 10, holdSeconds: 60 });
  const usage = await api.pool('big');
  t.like(usage, { bound: 1350, held: 150, pinned: 0 });

  const listed = await listAll(api, 200);
  t.is(listed.length, 1500);
  t.is(new Set(listed.map((l) => l.ip)).size, 1500, 'no lease twice across pages');

  const hist = await api.history({ identity: 'seed/big/10' });
  t.deepEqual(hist.events.map((e) => e.kind).sort(), ['allocated', 'released']);
  t.true(hist.events.every((e) => e.identity === 'seed/big/10'));

  // The agent's own list of its pool, through a client with the same small limit and the
  // default page size: pages too large for the limit are asked again at half the size.
  const agentEtcd = openEtcd({ endpoints: [etcd.endpoint], maxReceiveBytes: SMALL.maxReceiveBytes });
  t.teardown(() => agentEtcd.close());
  const source = new EtcdSource(agentEtcd, 'big', silentLogger, { onChange: () => {} });
  t.teardown(() => source.close());
  await source.start();
  t.is(source.relists, 1, 'the first list succeeded');
  t.is(source.snapshot().leases.length, 1500);

  clock.ms += 61_000;
  await eventually(async () => {
    const p = await api.pool('big');
    if (p.held !== 0) throw new Error(`${p.held} still held`);
  }, { what: 'the 150 lapsed holds to expire', timeoutMs: 30_000 });
  t.is((await listAll(api, 500)).length, 1350);
  t.is(ctl.expirer.isLeader, true);
});

test('at rest the expirer reads nothing from etcd, and still frees a hold the moment it lapses', async (t) => {
  // The host reaper reads etcd on its own timer (a keys-only Range of live hosts, every 5 s by
  // default): pushed out of the window so that only the expirer is measured.
  const { etcd, ctl, api, clock } = await fixture(t, 200, { heldEvery: 2, holdSeconds: 60, sweepMs: 20, hostCheckMs: 3_600_000 });
  await eventually(() => { if (!ctl.expirer.isLeader) throw new Error('not elected'); });
  // Its campaign and the check it runs on election are reads too: settled before the window.
  await eventually(() => { if (!ctl.reaper.isLeader) throw new Error('reaper not elected'); });
  await ctl.reaper.checkOnce();
  const start = ctl.expirer.passes;
  await eventually(() => { if (ctl.expirer.passes < start + 2) throw new Error('no pass yet'); });
  const before = await rangeCalls(etcd);
  const from = ctl.expirer.passes;
  await eventually(() => { if (ctl.expirer.passes < from + 25) throw new Error(`${ctl.expirer.passes - from} passes`); }, { timeoutMs: 20_000 });
  const reads = (await rangeCalls(etcd)) - before;
  // The metrics fetch itself is HTTP, not a Range; nothing else reads this etcd.
  t.is(reads, 0, `${reads} Range calls during 25 expirer passes at rest`);

  clock.ms += 60_000;
  await eventually(async () => {
    const p = await api.pool('big');
    if (p.held !== 0) throw new Error(`${p.held} still held`);
  }, { what: 'lapsed holds to expire' });
  t.like(await api.pool('big'), { bound: 100, held: 0 });
});

test('a read etcd refuses as too large fails alone: binds keep succeeding, also while an operator lists and reads history', async (t) => {
  const { ctl, api } = await fixture(t, 1500);
  // Settled first: the expirer's campaign calls would otherwise interleave with the read's retries.
  await eventually(() => { if (!ctl.expirer.isLeader) throw new Error('not elected'); });
  // An unpaged read of every lease: larger than the client's receive limit.
  const big = await t.throwsAsync(ctl.store.etcd.getAll().prefix(keys.leasePrefix).exec());
  t.regex(String(big?.message), /RESOURCE_EXHAUSTED|larger than max/);
  const bind = (i: number) => api.bind('big', { identity: `new/${i}`, host: 'node-a', containerId: `n${i}`, ifName: 'eth0' });
  const first = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => bind(i)));
  const failed = first.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason?.message));
  t.deepEqual(failed, [], 'no bind fails after the refused read');

  let operatorDone = false;
  const operator = (async () => {
    try {
      for (let round = 0; round < 3; round++) {
        t.is((await listAll(api, 300)).length >= 1500, true);
        await api.history({ identity: `seed/big/${round}` });
        await t.throwsAsync(ctl.store.etcd.getAll().prefix(keys.eventPrefix).exec());
      }
    } finally { operatorDone = true; }
  })();
  const results: PromiseSettledResult<unknown>[] = [];
  for (let i = 100; !operatorDone || i < 140; i++) results.push(...await Promise.allSettled([bind(i), bind(i + 10_000)]));
  await operator;
  const errors = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason);
  t.deepEqual(errors.map((e) => (isBerthError(e) ? e.kind : String(e))), [], 'every bind during the operator\'s reads succeeded');
});

test('history is trimmed per address and per identity when it grows, and by age in a paged pass', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const clock = { ms: T0 };
  const ctl = await startController({
    etcd: { endpoints: [etcd.endpoint], ...SMALL }, listen: '127.0.0.1:0', sweepMs: 20, log: silentLogger, now: () => clock.ms,
    historyMaxPerAddress: 3,
  });
  t.teardown(() => ctl.stop());
  const api = new ControllerClient({ url: ctl.url });
  t.teardown(() => api.close());
  await api.createPool({ name: 'trim', cidr: '198.18.56.0/24', holdSeconds: 3600 });
  const who = 'k8s/trim/t-0';
  let ip = '';
  // Ten events a second apart: keys sort by time, and no two share a millisecond.
  for (let i = 0; i < 5; i++) {
    clock.ms += 1000;
    ip = (await api.bind('trim', { identity: who, host: 'node-a', containerId: `t${i}`, ifName: 'eth0' })).lease.ip;
    clock.ms += 1000;
    await api.release('trim', { identity: who, containerId: `t${i}` });
  }
  const newest = (await api.history({ ip })).events.slice(-3);
  t.is(newest.length, 3);
  await eventually(async () => {
    const byIp = (await api.history({ ip })).events;
    const byId = (await api.history({ identity: who })).events;
    if (byIp.length !== 3 || byId.length !== 3) throw new Error(`${byIp.length} by address, ${byId.length} by identity`);
  }, { what: 'count trimming' });
  t.deepEqual((await api.history({ ip })).events, newest, 'the newest three are kept');
  t.deepEqual((await api.history({ identity: who })).events, newest);

  // The age pass: everything older than the cutoff goes, by address and by identity, read in pages of 50.
  const deleted = await trimByAge(ctl.store.etcd, new Date(T0 + 8500).toISOString());
  t.is(deleted, 2, 'the one event kept from before the cutoff, under both of its keys');
  t.deepEqual((await api.history({ ip })).events, newest.slice(1));
  t.deepEqual((await api.history({ identity: who })).events, newest.slice(1));
});

test('a listing token outlived by a compaction is refused with ContinueExpired, and a fresh listing works', async (t) => {
  const { etcd, api } = await fixture(t, 300);
  const first = await api.leases({ pool: 'big', limit: 100 });
  t.truthy(first.continue);
  const client = etcd.client();
  const put = await client.put('/elsewhere/bump').value('1');
  await client.kv.compact({ revision: put.header.revision, physical: true });
  const e = await t.throwsAsync(api.leases({ pool: 'big', limit: 100, continue: first.continue }));
  t.true(isBerthError(e) && e.kind === 'ContinueExpired', String(e));
  t.is((await listAll(api, 100)).length, 300);
});
