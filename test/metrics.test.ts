/**
 * Metrics, probes and `berthctl status` on the real simulated cluster: a
 * real etcd, the controller, one agent process per host namespace, pods
 * added and deleted by exec'ing the bundled plugin as a runtime does. Every
 * scrape goes over the daemons' --metrics-listen (unix sockets here, so the
 * test reaches an agent inside its namespace without any traffic) and is
 * parsed as Prometheus text (test/harness/prom.ts).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterStatus } from '../common/api';
import { silentLogger } from '../common/log';
import { startController } from '../controller/app';
import { run } from '../controller/cli/run';
import type { Attachment } from '../demo/runtime';
import { startCluster } from '../sim/cluster';
import { startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { get, metric, scrape, type Exposition } from '../sim/prom';
import { installPlugin } from './harness/plugin';

const until = <T>(what: string, fn: () => Promise<T | undefined>) =>
  eventually(async () => {
    const v = await fn();
    if (v === undefined) throw new Error(`not yet: ${what}`);
    return v;
  }, { timeoutMs: 10_000, intervalMs: 50, what });

async function berthctl(url: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const code = await run(['--controller', url, ...args], { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, env: {} });
  return { code, out, err };
}

test('metrics move as pods are added, deleted and moved; berthctl status follows the cluster', async (t) => {
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.64.0/24', hold: 3600, hostTtlSeconds: 2 });
  t.teardown(() => c.teardown());
  const rt = installPlugin(c);
  const [h1, h2] = c.hosts;
  const pool = c.pool.name;
  const ctlUrl = c.controller.metricsUrl!;
  const ctl = () => scrape(ctlUrl);
  const agent = (h: typeof h1) => scrape(h.metricsUrl);
  const cni = (e: Exposition, verb: string, code = '0') => metric(e, 'berth_agent_cni_request_duration_seconds_count', { verb, code });
  // Pool gauges are the watch-fed view's counts: they follow a commit once the view has seen it.
  const poolIs = (want: { bound: number; held: number }) => until(`pool bound ${want.bound}, held ${want.held}`, async () => {
    const e = await ctl();
    const got = { bound: metric(e, 'berth_controller_pool_bound_leases', { pool }), held: metric(e, 'berth_controller_pool_held_leases', { pool }) };
    return got.bound === want.bound && got.held === want.held ? e : undefined;
  });

  const size = (await c.client.pool(pool)).size;
  let m = await ctl();
  t.is(metric(m, 'berth_controller_pool_size_addresses', { pool }), size);
  t.is(metric(m, 'berth_controller_pool_bound_leases', { pool }), 0);
  t.is(metric(m, 'berth_controller_pool_free_addresses', { pool }), size);
  t.is(metric(m, 'berth_controller_lease_operations_total', { op: 'bind' }), undefined);
  t.is(metric(m, 'berth_controller_hosts'), 2);
  t.is(m.types.get('berth_controller_etcd_txn_duration_seconds'), 'histogram');
  let a1 = await agent(h1);
  t.is(cni(a1, 'ADD'), undefined);
  t.is(metric(a1, 'berth_agent_registered'), 1);
  t.is(metric(a1, 'berth_agent_del_journal_depth'), 0);
  t.true(metric(a1, 'berth_agent_reconcile_passes_total', { result: 'ok' })! >= 1);
  t.true(metric(a1, 'berth_agent_last_successful_pass_age_seconds')! >= 0);
  t.is(metric(a1, 'berth_agent_fastpath_map_entries'), undefined, 'no fast path without --fast-path');

  // ADD on host-1.
  const att: Attachment = { containerId: randomBytes(12).toString('hex'), netns: c.lab.pod('m1').path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'm', K8S_POD_NAME: 'web' } };
  const added = await rt.get(h1.name)!.add(att);
  t.is(added.code, 0, JSON.stringify(added.error));
  const ip = String(added.result.ips[0].address).split('/')[0];
  a1 = await agent(h1);
  t.is(cni(a1, 'ADD'), 1);
  m = await ctl();
  t.is(metric(m, 'berth_controller_lease_operations_total', { op: 'bind', result: 'allocated' }), 1);
  t.is(metric(m, 'berth_controller_lease_operation_duration_seconds_count', { op: 'bind', outcome: 'allocated' }), 1);
  t.true(metric(m, 'berth_controller_etcd_txn_duration_seconds_count', { outcome: 'committed' })! >= 1);
  m = await poolIs({ bound: 1, held: 0 });
  t.is(metric(m, 'berth_controller_pool_free_addresses', { pool }), size - 1);
  await until('watch lag observed', async () => metric(await ctl(), 'berth_controller_watch_lag_seconds_count') || undefined);
  // host-2 routes to the new pod: its endpoint count for host-1 moves, and its pass applied ops.
  await until('host-2 sees the endpoint on host-1', async () => (metric(await agent(h2), 'berth_agent_endpoints', { host: h1.name }) === 1 ? true : undefined));
  await c.waitConverged();
  t.true(metric(await agent(h2), 'berth_agent_reconcile_ops_total', { stage: 'applied' })! >= 1);

  // DEL on host-1: released and held for its identity.
  const deleted = await rt.get(h1.name)!.del(att, added.result);
  t.is(deleted.code, 0, JSON.stringify(deleted.error));
  a1 = await agent(h1);
  t.is(cni(a1, 'DEL'), 1);
  m = await ctl();
  t.is(metric(m, 'berth_controller_lease_operations_total', { op: 'release', result: 'released' }), 1);
  m = await poolIs({ bound: 0, held: 1 });
  t.is(metric(m, 'berth_controller_pool_free_addresses', { pool }), size - 1);

  // The same pod starts on host-2: the held lease moves there.
  const moved: Attachment = { ...att, containerId: randomBytes(12).toString('hex'), netns: c.lab.pod('m2').path };
  const again = await rt.get(h2.name)!.add(moved);
  t.is(again.code, 0, JSON.stringify(again.error));
  t.is(String(again.result.ips[0].address).split('/')[0], ip);
  t.is(cni(await agent(h2), 'ADD'), 1);
  m = await ctl();
  t.is(metric(m, 'berth_controller_lease_operations_total', { op: 'bind', result: 'existing' }), 1);
  await poolIs({ bound: 1, held: 0 });
  await until('host-1 sees the endpoint move to host-2', async () => {
    const e = await agent(h1);
    return metric(e, 'berth_agent_endpoints', { host: h2.name }) === 1 && metric(e, 'berth_agent_endpoints', { host: h1.name }) === 0 ? true : undefined;
  });

  // A failed verb is counted under its CNI error code.
  const unknown: Attachment = { ...att, containerId: randomBytes(12).toString('hex') };
  const checked = await rt.get(h1.name)!.check(unknown, added.result);
  t.not(checked.code, 0);
  const code = String(checked.error!.code);
  const a1c = await agent(h1);
  t.is(cni(a1c, 'CHECK', code), 1, `CHECK counted under code ${code}: ${JSON.stringify(a1c.samples.filter((s) => s.name.startsWith('berth_agent_cni') && s.name.endsWith('count')))}`);

  // A DEL while host-1's agent is down is journalled by the plugin; the restarted agent replays it.
  await c.stopAgent(h1);
  const journalled = await rt.get(h1.name)!.del(unknown);
  t.is(journalled.code, 0, JSON.stringify(journalled.error));
  await c.startAgent(h1);
  await until('the journalled DEL replayed', async () => (metric(await agent(h1), 'berth_agent_del_journal_replays_total', { result: 'replayed' }) === 1 ? true : undefined));
  t.is(metric(await agent(h1), 'berth_agent_del_journal_depth'), 0);

  // berthctl status: both agents alive with a last pass, the pool's usage, nothing stuck.
  const status = await until('both agents published a pass', async () => {
    const s = await c.client.status();
    return s.hosts.every((h) => h.lastPassAt !== undefined) ? s : undefined;
  });
  t.deepEqual(status.hosts.map((h) => [h.name, h.liveness, h.leases]), [[h1.name, 'alive', 0], [h2.name, 'alive', 1]]);
  t.is(status.pools[0].bound, 1);
  t.is(status.attentionTotal, 0);
  let out = await berthctl(c.controllerUrl, ['status']);
  t.is(out.code, 0, out.err);
  t.regex(out.out, new RegExp(`^${h1.name}\\s+alive\\s+\\d+s ago\\s+${pool}`, 'm'));
  t.regex(out.out, new RegExp(`^${pool}\\s+${c.pool.cidr}\\s+${size}\\s+1\\s+0\\s+0\\s+${size - 1}`, 'm'));
  t.regex(out.out, /no lease needs attention/);

  // host-2's agent goes away: its pod's lease is stuck bound on an absent host.
  await c.stopAgent(h2);
  const stuck = await until('host-2 absent', async () => {
    const r = await berthctl(c.controllerUrl, ['status', '--json']);
    const s = JSON.parse(r.out) as ClusterStatus;
    return s.hosts.find((h) => h.name === h2.name)?.alive === false ? s : undefined;
  });
  t.deepEqual(stuck.attention.map((a) => [a.ip, a.host, a.reason]), [[ip, h2.name, 'host-absent']]);
  out = await berthctl(c.controllerUrl, ['status']);
  t.regex(out.out, new RegExp(`^${ip.replace(/\./g, '\\.')}\\s+${pool}\\s+k8s/m/web\\s+bound\\s+${h2.name}\\s+host-absent`, 'm'));
});

test('agent /readyz: 503 while it waits for its pool, 200 once registered, past its first pass and serving CNI', async (t) => {
  const c = await startCluster({ hosts: 1, poolCidr: '198.18.65.0/24' });
  t.teardown(() => c.teardown());
  const h = c.hosts[0];
  t.is((await get(h.metricsUrl, '/readyz')).status, 200);
  await c.stopAgent(h);
  const from = c.logs(h).length;
  await c.startAgent(h, { args: ['--pool', 'later'], noWait: true });
  await c.waitLog(h, (l) => l.msg === 'waiting for pool', { fromLine: from });
  const waiting = await get(h.metricsUrl, '/readyz');
  t.is(waiting.status, 503);
  t.deepEqual(JSON.parse(waiting.body), { ready: false, checks: { registered: false, firstPass: false, cniSocket: false } });
  t.is((await get(h.metricsUrl, '/healthz')).status, 200, 'alive while not ready');
  await c.client.createPool({ name: 'later', cidr: '198.18.66.0/24' });
  const ready = await until('agent ready', async () => {
    const r = await get(h.metricsUrl, '/readyz');
    return r.status === 200 ? r : undefined;
  });
  t.deepEqual(JSON.parse(ready.body), { ready: true, checks: { registered: true, firstPass: true, cniSocket: true } });
});

test('controller /readyz: 200 with etcd reachable and the view synced, 503 once etcd is gone; /healthz stays 200', async (t) => {
  const etcd = await startEtcd();
  const dir = mkdtempSync(join(tmpdir(), 'berth-metrics-'));
  const ctl = await startController({ etcd: { endpoints: [etcd.endpoint], callTimeoutMs: 1000 }, listen: '127.0.0.1:0', log: silentLogger, metricsListen: `unix://${join(dir, 'm.sock')}` });
  t.teardown(async () => { await ctl.stop(); await etcd.stop().catch(() => undefined); rmSync(dir, { recursive: true, force: true }); });
  const url = ctl.metricsUrl!;
  const ready = await get(url, '/readyz');
  t.is(ready.status, 200);
  t.deepEqual(JSON.parse(ready.body), { ready: true, checks: { etcd: true, view: true } });
  t.is((await get(url, '/metrics')).status, 200);
  t.is((await get(url, '/nope')).status, 404);
  await etcd.stop();
  const gone = await until('controller not ready', async () => {
    const r = await get(url, '/readyz');
    return r.status === 503 ? r : undefined;
  });
  t.is(JSON.parse(gone.body).checks.etcd, false);
  t.is((await get(url, '/healthz')).status, 200);
});
