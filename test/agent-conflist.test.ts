/**
 * The agent's conflist publication (--cni-conf-dir), with a real agent on a
 * simulated host: the conflist is in the conf dir exactly while /readyz
 * says ready. Absent while the agent waits for its pool; present, with
 * install-cni's bytes, once it is ready (and a pod is created through it);
 * kept while etcd is frozen past the host lease (registration lost: /readyz
 * 503, but the agent still serves CNI, and withdrawing on a control-plane
 * outage would make every node NotReady at once); gone after SIGTERM. An agent restarted after
 * a SIGKILL finds the file right and leaves it alone (same inode, same mtime).
 */
import test from 'ava';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime } from '../demo/runtime';
import { conflistText } from '../agent/install-cni';
import { spawnSync } from 'node:child_process';
import { AGENT_MAIN, startCluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { get } from '../sim/prom';
import { podRoundTrip } from './harness/plugin';

const ROOT = join(__dirname, '../..');

test('the conflist is in the conf dir exactly while the agent is ready', async (t) => {
  const c = await startCluster({ hosts: 1, poolCidr: '198.18.42.0/24', hostTtlSeconds: 2 });
  let frozen = false;
  const thaw = () => { if (frozen) { process.kill(c.etcd.pid, 'SIGCONT'); frozen = false; } };
  t.teardown(async () => { thaw(); await c.teardown(); });
  const h = c.hosts[0];
  await c.stopAgent(h);
  const binDir = join(c.dir, 'node/opt/cni/bin');
  const confDir = join(c.dir, 'node/etc/cni/net.d');
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  copyFileSync(join(ROOT, 'dist/bin/berth'), join(binDir, 'berth'));
  const file = join(confDir, '10-berth.conflist');
  const pool = 'conflist';
  const args = ['--pool', pool, '--cni-conf-dir', confDir, '--cni-bin-dir', binDir];
  const readyz = async () => (await get(h.metricsUrl, '/readyz').catch(() => ({ status: 0 }))).status;
  const published = (what: string) => eventually(() => { if (!existsSync(file)) throw new Error('no conflist'); }, { timeoutMs: 15_000, what });

  // A cniVersion berth can't write: one line, non-zero exit, before anything is touched.
  const bad = spawnSync('ip', ['netns', 'exec', h.sim.name, process.execPath, AGENT_MAIN, '--underlay-ip', h.sim.underlayIp, ...args, '--cni-version', '9.9.9'], { encoding: 'utf8' });
  t.not(bad.status, 0, bad.stderr);
  t.regex(bad.stderr, /^error: option '--cni-version <v>' argument '9\.9\.9' is invalid\. not a CNI version berth supports \([0-9., ]+\)\n$/);
  t.false(existsSync(file));

  // Not ready (its pool doesn't exist yet): no conflist.
  let from = c.logs(h).length;
  await c.startAgent(h, { args, noWait: true });
  await c.waitLog(h, (l) => l.msg === 'waiting for pool', { fromLine: from });
  t.is(await readyz(), 503);
  t.false(existsSync(file), 'no conflist before ready');

  // Ready: exactly what install-cni writes for the same inputs.
  await c.client.createPool({ name: pool, cidr: '198.18.43.0/24' });
  await published('the conflist once the agent is ready');
  t.is(await readyz(), 200);
  t.is(readFileSync(file, 'utf8'), conflistText({ cniVersion: '1.0.0', network: 'berth', pool, agentSocket: h.socket, journalDir: h.journalDir, chain: [] }));
  t.is(statSync(file).mode & 0o777, 0o644);
  // Logged right after the rename that made the file appear: waited for, not read at once.
  await c.waitLog(h, (l) => l.msg === 'cni conflist published', { fromLine: from });
  const result = await podRoundTrip(t, c, new CniRuntime(binDir, file), h, 'web-0', 'publish0123');
  t.true(String(result.ips[0].address).startsWith('198.18.43.'), result.ips[0].address);

  // Unready: etcd frozen past the host lease, so the agent is not registered;
  // it still serves CNI (ADD says try again), so the conflist stays.
  from = c.logs(h).length;
  process.kill(c.etcd.pid, 'SIGSTOP');
  frozen = true;
  const kept = await c.waitLog(h, (l) => l.msg === 'agent not ready, still serving CNI: conflist kept', { fromLine: from, timeoutMs: 15_000 });
  t.deepEqual(kept.failing, ['registered']);
  t.is(await readyz(), 503);
  t.true(existsSync(file), 'kept through a Berth control-plane outage');
  t.false(c.logs(h).slice(from).some((l) => l.msg === 'cni conflist withdrawn'));
  thaw();
  await eventually(async () => { if ((await readyz()) !== 200) throw new Error('not ready'); }, { timeoutMs: 15_000, what: 'ready again once etcd answers' });
  t.is(readFileSync(file, 'utf8'), conflistText({ cniVersion: '1.0.0', network: 'berth', pool, agentSocket: h.socket, journalDir: h.journalDir, chain: [] }));

  // SIGTERM: gone by the time the agent has exited.
  await c.stopAgent(h, 'SIGTERM');
  t.false(existsSync(file), 'no conflist once the agent stopped');

  // A SIGKILLed agent leaves it; the next one finds it right and rewrites nothing.
  await c.startAgent(h, { args });
  await published('the conflist after a restart');
  await c.stopAgent(h, 'SIGKILL');
  t.true(existsSync(file));
  const before = statSync(file, { bigint: true });
  from = c.logs(h).length;
  await c.startAgent(h, { args });
  await c.waitLog(h, (l) => l.msg === 'agent ready', { fromLine: from });
  await eventually(async () => { if ((await readyz()) !== 200) throw new Error('not ready'); }, { what: 'the restarted agent to be ready' });
  const after = statSync(file, { bigint: true });
  t.deepEqual([after.ino, after.mtimeNs], [before.ino, before.mtimeNs], 'already right: not rewritten');
  t.false(c.logs(h).slice(from).some((l) => l.msg === 'cni conflist published' || l.msg === 'cni conflist withdrawn'));
});

test('a rolling update: while an agent is stopped its node has no conflist, and its pods keep talking to other hosts\' pods', async (t) => {
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.47.0/24' });
  t.teardown(() => c.teardown());
  const [h1, h2] = c.hosts;
  const confDir = join(c.dir, 'node1/etc/cni/net.d');
  mkdirSync(confDir, { recursive: true });
  const args = ['--cni-conf-dir', confDir, '--cni-bin-dir', join(c.dir, 'node1/opt/cni/bin')];
  await c.stopAgent(h1);
  await c.startAgent(h1, { args });
  const a = await c.plumbPod(h1, 'upgrade-a');
  const b = await c.plumbPod(h2, 'upgrade-b');
  await c.waitConverged();
  const talk = (what: string) => eventually(() => {
    if (!c.ping(a.ns, b.ip) || !c.ping(b.ns, a.ip)) throw new Error('no echo');
  }, { timeoutMs: 10_000, what });
  await talk('a <-> b before');

  // The DaemonSet controller deletes the old pod (SIGTERM) ...
  await c.stopAgent(h1, 'SIGTERM');
  t.false(existsSync(join(confDir, '10-berth.conflist')), 'the node reports its network not ready');
  await talk('a <-> b with no agent on host-1: existing pods keep working');
  // ... and starts the new one.
  await c.startAgent(h1, { args });
  await published(join(confDir, '10-berth.conflist'));
  await talk('a <-> b after');
});

const published = (file: string) => eventually(() => { if (!existsSync(file)) throw new Error('no conflist'); }, { timeoutMs: 15_000, what: 'the conflist' });
