/**
 * The agent against controller replicas coming and going, and its DEL
 * journal: a real etcd, two real controller replicas on it (the cluster's
 * and a second one), one simulated host whose agent knows both, and CNI
 * requests sent to the agent socket as the plugin sends them.
 *   - killing the replica in use: ADD and DEL go on through the other;
 *   - no replica left: DEL is journalled and succeeds, and the replay
 *     releases once a replica is back;
 *   - a DEL journalled right after the agent's start-up replay is replayed
 *     at once, not a resync period later.
 */
import test from 'ava';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import { ControllerClient } from '../common/controller-client';
import { appendDel, readDelJournal } from '../common/del-journal';
import { silentLogger } from '../common/log';
import { startController, type RunningController } from '../controller/app';
import { sendAgentRequest } from './doubles/agent-client';
import { vethNameFor } from '../agent/desired';
import { startCluster, type Cluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec, type Netns } from '../sim/netns';

let c: Cluster;
let replica2: RunningController | undefined;
let replica3: RunningController | undefined;
let sock2 = '';
const clients: ControllerClient[] = [];

test.before(async () => {
  c = await startCluster({ hosts: 1, poolCidr: '198.18.51.0/24', resyncMs: 1000 });
  sock2 = `unix://${join(c.dir, 'replica2.sock')}`;
  replica2 = await startController({ etcd: { endpoints: [c.etcd.endpoint] }, listen: sock2, log: silentLogger });
  await c.stopAgent(c.hosts[0]);
  await c.startAgent(c.hosts[0], { args: ['--controller', sock2] });
});
test.after.always(async () => {
  for (const x of clients) x.close();
  await replica2?.stop().catch(() => undefined);
  await replica3?.stop().catch(() => undefined);
  await c?.teardown();
});

const client = (url: string) => {
  const x = new ControllerClient({ url });
  clients.push(x);
  return x;
};

const req = (verb: 'ADD' | 'DEL', name: string, pod: Netns | undefined): AgentRequest => ({
  verb, containerId: `ctr-${name}`, netns: pod?.path ?? '', ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'fo', K8S_POD_NAME: name },
  network: 'berth-net', pool: c.pool.name,
});
const ask = (r: AgentRequest): Promise<AgentResponse> => sendAgentRequest(c.hosts[0].socket, r, 30_000);
const leaseState = async (via: ControllerClient, name: string) => (await via.leases({ pool: c.pool.name, identity: `k8s/fo/${name}` })).leases[0]?.state;
const veths = () => nsExec(c.hosts[0].sim, 'ip', '-o', 'link', 'show', 'type', 'veth');

test.serial('killing the controller replica in use: ADD and DEL go on through the other', async (t) => {
  const a = c.lab.pod('a');
  t.like(await ask(req('ADD', 'a', a)), { ok: true }, 'ADD through the first replica');
  await c.controller.stop();
  const other = client(sock2);
  const b = c.lab.pod('b');
  const addB = await ask(req('ADD', 'b', b));
  t.like(addB, { ok: true }, `ADD after the kill: ${JSON.stringify(addB)}`);
  t.is(await leaseState(other, 'b'), 'bound');
  const moved = await c.waitLog(c.hosts[0], (l) => l.msg === 'controller failover');
  t.like(moved, { from: c.controllerUrl, to: sock2 }, 'the ADD went to the first replica, then failed over');
  t.like(await ask(req('DEL', 'a', a)), { ok: true }, 'DEL after the kill');
  t.not(await leaseState(other, 'a'), 'bound', 'the DEL released through the other replica');
  t.deepEqual((await readDelJournal(c.hosts[0].journalDir)).entries, [], 'nothing was journalled: a replica answered');
  // A 4xx answer is an answer: no failover, no journal.
  const bad = await ask({ ...req('ADD', 'c', c.lab.pod('c')), ips: ['198.19.0.250'] });
  t.like(bad, { ok: false, error: { code: 'InvalidRequest', details: '198.19.0.250' } });
  t.is(c.logs(c.hosts[0], 'controller failover').length, 1, 'the 4xx answer caused no second failover');
});

test.serial('no replica left: DEL is journalled and succeeds; the replay releases once a replica is back', async (t) => {
  const d = c.lab.pod('d');
  t.like(await ask(req('ADD', 'd', d)), { ok: true });
  await replica2!.stop();
  replica2 = undefined;
  const del = await ask(req('DEL', 'd', d));
  t.like(del, { ok: true }, `DEL with every replica down: ${JSON.stringify(del)}`);
  const { entries } = await readDelJournal(c.hosts[0].journalDir);
  t.is(entries.length, 1);
  t.like(entries[0].request, { verb: 'DEL', containerId: 'ctr-d', ifName: 'eth0' });
  await eventually(() => { if (veths().includes(vethNameFor('ctr-d', 'eth0'))) throw new Error('veth of d still there'); }, { what: 'veth of d gone' });
  // A replica comes back (on the second one's address): the periodic replay releases.
  replica3 = await startController({ etcd: { endpoints: [c.etcd.endpoint] }, listen: sock2, log: silentLogger });
  const back = client(sock2);
  await eventually(async () => {
    if ((await readDelJournal(c.hosts[0].journalDir)).entries.length) throw new Error('still journalled');
    if ((await leaseState(back, 'd')) === 'bound') throw new Error('still bound');
  }, { timeoutMs: 15_000, what: 'the journalled DEL to be replayed' });
  t.pass();
});

test.serial('a DEL journalled just after the agent started is replayed at once, not a resync period later', async (t) => {
  const h = c.hosts[0];
  const back = client(sock2);
  const e = c.lab.pod('e');
  t.like(await ask(req('ADD', 'e', e)), { ok: true });
  // Restart with a resync period far beyond the wait below: only a replay on
  // the journal's change can release in time.
  const from = c.logs(h).length;
  await c.stopAgent(h);
  await c.startAgent(h, { args: ['--controller', sock2, '--resync-ms', '600000'] });
  await c.waitLog(h, (l) => l.msg === 'del journal watched', { fromLine: from });
  // What the plugin does when its DEL finds the socket not yet open.
  await appendDel(h.journalDir, req('DEL', 'e', e));
  await eventually(async () => {
    if ((await readDelJournal(h.journalDir)).entries.length) throw new Error('still journalled');
    if ((await leaseState(back, 'e')) === 'bound') throw new Error('still bound');
  }, { timeoutMs: 10_000, what: 'the DEL journalled after start to be replayed' });
  t.pass();
});
