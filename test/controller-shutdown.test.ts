/**
 * A stopped controller lets its process exit: its elections (expirer, host
 * reaper) leave nothing retrying against an etcd client it closed. Run in a
 * child process, since the claim is about the whole process (its event loop
 * ending on its own).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { silentLogger } from '../common/log';
import { Leadership } from '../controller/leadership';
import { startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';

const LEADERSHIP = join(__dirname, '../controller/leadership.js');
const LOG = join(__dirname, '../common/log.js');
const ETCD3 = require.resolve('etcd3');

// One replica leads; candidates, each on its own etcd client as a replica
// has, start and stop at every moment of their campaign (one stopped before
// its wait on the leader's key was in place used to leave that wait behind,
// retried for good on its closed client). Then the leader stops too, and
// after etcd goes away the process must end by itself.
const SCRIPT = `
const { Etcd3 } = require(${JSON.stringify(ETCD3)});
const { Leadership } = require(${JSON.stringify(LEADERSHIP)});
const { silentLogger } = require(${JSON.stringify(LOG)});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const replica = (id) => {
  const etcd = new Etcd3({ hosts: process.argv[1] });
  const l = new Leadership(etcd, silentLogger, { election: 'shutdown-test', replicaId: id, periodMs: 1000, role: 'test', tick: () => {} });
  l.start();
  return { l, async stop() { await l.stop(); etcd.close(); } };
};
(async () => {
  const leader = replica('leader');
  while (!leader.l.isLeader) await sleep(5);
  for (let i = 0; i < 40; i++) {
    const c = replica('candidate-' + i);
    await sleep(i % 20);
    if (c.l.isLeader) throw new Error('two leaders');
    await c.stop();
  }
  await leader.stop();
  console.log('stopped');
})().catch((e) => { console.error(e); process.exit(2); });
`;

test('a stopped leadership, leader or candidate stopped mid-campaign, leaves nothing that keeps the process alive', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const child = spawn(process.execPath, ['-e', SCRIPT, etcd.endpoint], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // etcd goes away after the controllers stopped, as in any shutdown of the whole thing.
  await Promise.race([exited, new Promise<void>((resolve) => { const check = () => (out.includes('stopped') ? resolve() : setTimeout(check, 20)); check(); })]);
  await etcd.stop();
  // An etcd3 watch retried on a closed client re-arms its timer for good (backoff up to 30 s).
  const verdict = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 20_000).unref())]);
  if (verdict === 'still running' && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  t.true(out.includes('stopped'), out);
  t.is(verdict, 0, `the process did not end by itself: ${out}`);
});

test('leadership: one leader; a stopped leader hands over at once; a leader whose key is deleted steps down', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const elections: number[] = [0, 0, 0];
  const replicas = [0, 1, 2].map((i) => {
    const client = etcd.client();
    const l = new Leadership(client, silentLogger, { election: 'handover-test', replicaId: `r${i}`, periodMs: 60_000, role: 'test', tick: () => {}, onElected: () => { elections[i]++; } });
    l.start();
    return l;
  });
  t.teardown(() => Promise.all(replicas.map((l) => l.stop())));
  const leaders = () => replicas.filter((l) => l.isLeader);
  await eventually(() => { if (leaders().length !== 1) throw new Error(`${leaders().length} leaders`); });
  const first = leaders()[0];
  // Stopped: its key goes with its revoked lease, so another takes over well within the 10 s TTL.
  await first.stop();
  await eventually(() => { if (leaders().length !== 1) throw new Error(`${leaders().length} leaders`); }, { timeoutMs: 5000 });
  const second = leaders()[0];
  t.not(second, first);
  // Its key deleted behind its back: it steps down and the election runs again.
  const before = elections.reduce((a, b) => a + b, 0);
  await etcd.client().delete().key('handover-test').exec();
  await eventually(() => {
    if (elections.reduce((a, b) => a + b, 0) === before) throw new Error('no new election');
    if (leaders().length !== 1) throw new Error(`${leaders().length} leaders`);
  }, { timeoutMs: 5000 });
  t.is(await etcd.client().get('handover-test').string(), leaders()[0] === replicas[0] ? 'r0' : leaders()[0] === replicas[1] ? 'r1' : 'r2');
});
