/**
 * The whole story, automated: a 3-host cluster, pods created by exec'ing the
 * installed plugin through a conflist as a runtime does, then stable IPs on
 * restart and on move, connectivity across every host pair, a lease table and
 * history that match what happened, and nothing left over. The last test runs
 * the README's demo command itself, so it cannot silently break.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Attachment } from '../demo/runtime';
import { startCluster, type Cluster, type ClusterHost } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { ip, type Netns } from '../sim/netns';
import { installPlugin } from './harness/plugin';

const ROOT = join(__dirname, '../..');
interface P { name: string; host: ClusterHost; ns: Netns; att: Attachment; ip: string; result: unknown }

const reachable = (c: Cluster, from: Netns, to: string) =>
  eventually(() => { if (!c.ping(from, to)) throw new Error(`no reply from ${to}`); }, { timeoutMs: 10_000, intervalMs: 100 }).then(() => true, () => false);

test('stable IPs across restart and move, all host pairs connected, history matches', async (t) => {
  const c = await startCluster({ hosts: 3, poolCidr: '198.18.128.0/20', hold: 3600 });
  let cleaned = false;
  t.teardown(async () => { if (!cleaned) await c.teardown(); });
  const rt = installPlugin(c);
  const add = async (h: ClusterHost, name: string): Promise<P> => {
    const ns = c.lab.pod(name);
    const att: Attachment = { containerId: randomBytes(12).toString('hex'), netns: ns.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'e2e', K8S_POD_NAME: name } };
    const out = await rt.get(h.name)!.add(att);
    t.is(out.code, 0, JSON.stringify(out.error));
    return { name, host: h, ns, att, ip: String(out.result.ips[0].address).split('/')[0], result: out.result };
  };
  const del = async (p: P) => {
    const out = await rt.get(p.host.name)!.del(p.att, p.result);
    t.is(out.code, 0, JSON.stringify(out.error));
    ip('netns', 'del', p.ns.name);
  };

  const pods = await Promise.all(c.hosts.map((h, i) => add(h, `web-${i}`)));
  await c.waitConverged();
  for (const from of pods) for (const to of pods) if (from !== to) t.true(await reachable(c, from.ns, to.ip), `${from.name} -> ${to.name}`);

  const first = pods[0];
  await del(first);
  const restarted = await add(first.host, first.name);
  t.is(restarted.ip, first.ip, 'same IP after a restart on the same host');
  t.true(await reachable(c, pods[1].ns, restarted.ip));

  await del(restarted);
  const moved = await add(c.hosts[2], first.name);
  t.is(moved.ip, first.ip, 'same IP after a move to another host');
  await c.waitConverged();
  for (const from of pods.slice(1)) t.true(await reachable(c, from.ns, moved.ip), `${from.name} -> moved pod`);
  const onOldHost = await add(c.hosts[0], 'web-0-b');
  t.true(await reachable(c, onOldHost.ns, moved.ip), 'the old host routes to the new one');

  const leases = (await c.client.leases({ pool: c.pool.name })).leases;
  const mine = leases.find((l) => l.identity === 'k8s/e2e/web-0');
  t.like(mine, { ip: first.ip, state: 'bound', binding: { host: c.hosts[2].name, containerId: moved.att.containerId } });
  t.is(leases.length, 4);
  const history = (await c.client.history({ ip: first.ip })).events;
  t.deepEqual(history.map((e) => [e.kind, e.host, e.containerId]), [
    ['allocated', c.hosts[0].name, first.att.containerId],
    ['released', c.hosts[0].name, first.att.containerId],
    ['bound', c.hosts[0].name, restarted.att.containerId],
    ['released', c.hosts[0].name, restarted.att.containerId],
    ['moved', c.hosts[2].name, moved.att.containerId],
  ]);

  const lab = c.lab;
  const dir = c.dir;
  const pids = c.hosts.map((h) => h.pid);
  await c.teardown();
  cleaned = true;
  t.deepEqual(lab.leftovers(), [], 'no namespace left');
  t.false(existsSync(dir), 'no temp dir left');
  for (const pid of pids) t.throws(() => process.kill(pid!, 0), undefined, `agent ${pid} is gone`);
});

test('the README demo command runs the whole story and leaves nothing behind', async (t) => {
  const run = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn('bash', [join(ROOT, 'scripts/demo.sh'), '--hosts', '2', '--pods', '1', '--json'], {
      env: { ...process.env, BERTH_SKIP_BUILD: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code) => resolve({ code, out, err }));
  });
  t.is(run.code, 0, run.err.slice(-2000));
  const report = JSON.parse(run.out);
  t.true(report.ok);
  t.deepEqual(report.steps.map((s: { step: string }) => s.step), ['cluster', 'pods', 'ping', 'restart', 'move', 'leases']);
  t.true(report.steps.every((s: { ok: boolean }) => s.ok));
  const restart = report.steps.find((s: { step: string }) => s.step === 'restart');
  t.is(restart.before, restart.after);
  // Other test files run at the same time, so look only at what this demo made.
  const cluster = report.steps[0];
  t.regex(cluster.namespacePrefix, /^bth-[0-9a-f]+-$/);
  const leftNs = ip('netns', 'list').split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(cluster.namespacePrefix));
  t.deepEqual(leftNs, [], 'the demo removed its namespaces');
  t.false(existsSync(cluster.dir), 'the demo removed its temp dir');
  t.true(cluster.dir.startsWith(tmpdir()));
});
