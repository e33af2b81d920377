/**
 * A wedged agent fails fast (issue 10, "a hung agent cost 60 s per pod
 * attempt"): a real agent process, stopped with SIGSTOP, so its socket still
 * accepts connections into the kernel's backlog while nothing reads them.
 *   - ADD gets 11 as soon as agentAcceptTimeoutMs passes without the agent's
 *     acknowledgement, not after agentTimeoutMs (set far beyond any test
 *     timeout here, so only the missing acknowledgement can end it);
 *   - DEL is journalled and succeeds;
 *   - after SIGCONT the journal is replayed (the lease released), and the
 *     requests the relay gave up on, still queued in the backlog, are dropped
 *     undone: the ADD the runtime was told failed binds nothing.
 */
import test from 'ava';
import { readDelJournal } from '../common/del-journal';
import { startCluster, type Cluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { execPlugin } from '../sim/exec';
import type { Netns } from '../sim/netns';

let c: Cluster;
test.before(async () => {
  c = await startCluster({ hosts: 1, poolCidr: '198.18.57.0/24' });
});
test.after.always(async () => {
  await c?.teardown();
});

/** acceptMs: short where the agent is stopped (the bound is what is tested), generous where it must answer. */
const cni = (verb: string, name: string, pod: Netns | undefined, acceptMs = 1000) => {
  const h = c.hosts[0];
  return execPlugin({
    CNI_COMMAND: verb, CNI_CONTAINERID: `ctr-${name}`, CNI_NETNS: pod?.path ?? '', CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=wedge;K8S_POD_NAME=${name}`,
  }, {
    cniVersion: '1.0.0', name: 'berth-net', type: 'berth', pool: c.pool.name, agentSocket: h.socket, journalDir: h.journalDir,
    agentAcceptTimeoutMs: acceptMs, agentTimeoutMs: 600_000,
  });
};
const leaseState = async (name: string) => (await c.client.leases({ pool: c.pool.name, identity: `k8s/wedge/${name}` })).leases[0]?.state;

test.serial('a stopped agent: ADD is 11 for want of an acknowledgement, DEL is journalled; on SIGCONT the journal is replayed and the abandoned ADD is dropped', async (t) => {
  const h = c.hosts[0];
  const a = c.lab.pod('a');
  const addA = await cni('ADD', 'a', a, 10_000);
  t.is(addA.code, 0, addA.stdout + addA.stderr);
  t.is(await leaseState('a'), 'bound');

  const pid = h.pid!;
  process.kill(pid, 'SIGSTOP');
  let stopped = true;
  t.teardown(() => { if (stopped) process.kill(pid, 'SIGCONT'); });

  const addB = await cni('ADD', 'b', c.lab.pod('b'));
  t.is(addB.code, 1);
  t.is(addB.json?.code, 11, addB.stdout);
  t.regex(addB.json.details, /no acknowledgement within 1000 ms/);

  const delA = await cni('DEL', 'a', a);
  t.is(delA.code, 0, delA.stdout + delA.stderr);
  t.regex(delA.stderr, /DEL journalled for replay/);
  t.is((await readDelJournal(h.journalDir)).entries.length, 1);
  t.is(await leaseState('a'), 'bound', 'nothing released while the agent is stopped');

  const from = c.logs(h).length;
  process.kill(pid, 'SIGCONT');
  stopped = false;
  await eventually(async () => {
    if ((await readDelJournal(h.journalDir)).entries.length) throw new Error('still journalled');
    if ((await leaseState('a')) === 'bound') throw new Error('a still bound');
  }, { timeoutMs: 15_000, what: 'the journalled DEL to be replayed' });
  // Both queued requests were read after the relay had left, and dropped.
  await eventually(() => {
    const dropped = c.logs(h).slice(from).filter((l) => /relay left before its request was read/.test(l.msg));
    if (dropped.length < 2) throw new Error(`${dropped.length} dropped`);
    return dropped;
  }, { timeoutMs: 10_000, what: 'the abandoned requests to be dropped' });
  t.deepEqual(c.logs(h).slice(from).filter((l) => /relay left/.test(l.msg)).map((l) => l.verb).sort(), ['ADD', 'DEL']);
  t.is(await leaseState('b') as string | undefined, undefined, 'the ADD the runtime was told failed bound nothing');
});
