/**
 * containerd's second DEL (RemovePodSandbox: CNI_NETNS "", no prevResult)
 * is answered from the agent's own state (agent/cni/local-del.ts): a real
 * agent process, real etcd and controller, pod namespaces, the `berth`
 * relay exec'd as a runtime does, and a counting proxy between the agent
 * and the controller (test/doubles/counting-proxy.ts) that sees every
 * controller request the agent makes.
 *   - the first DEL releases through the controller; the second, for the
 *     same container with CNI_NETNS "", succeeds with zero controller requests;
 *   - a DEL of an attachment whose binding exists but whose veth is gone
 *     still releases (no veth alone is not evidence);
 *   - after an agent restart the agent knows no release and asks.
 */
import test from 'ava';
import { vethNameFor } from '../agent/desired';
import { startCluster, type Cluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { execPlugin } from '../sim/exec';
import { nsExec, type Netns } from '../sim/netns';
import { parseExposition, get } from '../sim/prom';
import { startCountingProxy, type CountingProxy } from './doubles/counting-proxy';

let c: Cluster;
let proxy: CountingProxy;
test.before(async () => {
  c = await startCluster({ hosts: 1, poolCidr: '198.18.58.0/24' });
  proxy = await startCountingProxy(c.controllerUrl);
  await c.stopAgent(c.hosts[0]);
  await c.startAgent(c.hosts[0], { controllerUrl: proxy.url });
});
test.after.always(async () => {
  await c?.teardown();
  await proxy?.close();
});

const cni = (verb: string, name: string, pod: Netns | undefined) => {
  const h = c.hosts[0];
  return execPlugin({
    CNI_COMMAND: verb, CNI_CONTAINERID: `ctr-${name}`, CNI_NETNS: pod?.path ?? '', CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=twice;K8S_POD_NAME=${name}`,
  }, { cniVersion: '1.0.0', name: 'berth-net', type: 'berth', pool: c.pool.name, agentSocket: h.socket, journalDir: h.journalDir });
};
const leaseState = async (name: string) => (await c.client.leases({ pool: c.pool.name, identity: `k8s/twice/${name}` })).leases[0]?.state;
const releases = (from: number) => proxy.requests.slice(from).filter((r) => /release/.test(r));
const vethThere = (name: string) => nsExec(c.hosts[0].sim, 'ip', '-o', 'link', 'show').includes(`${vethNameFor(`ctr-${name}`, 'eth0')}@`);

/** Waits until the agent's watch shows `n` leases bound to its host (its berth_agent_endpoints gauge). */
async function watchShows(n: number): Promise<void> {
  const h = c.hosts[0];
  await eventually(async () => {
    const e = parseExposition((await get(h.metricsUrl, '/metrics')).body);
    const v = e.samples.find((s) => s.name === 'berth_agent_endpoints' && s.labels.host === h.name)?.value;
    if (v !== n) throw new Error(`endpoints ${v}`);
  }, { timeoutMs: 10_000, what: `the agent's watch to show ${n} local leases` });
}

/** StopPodSandbox's DEL, then everything it set going is done: the watch shows the release, the veth is deleted. */
async function firstDel(t: { is(a: unknown, b: unknown, m?: string): void; true(a: boolean, m?: string): void }, name: string, pod: Netns): Promise<void> {
  const from = proxy.requests.length;
  const del = await cni('DEL', name, pod);
  t.is(del.code, 0, del.stdout + del.stderr);
  t.true(releases(from).length >= 1, `the first DEL released through the controller: ${proxy.requests.slice(from).join(', ')}`);
  t.true((await leaseState(name)) !== 'bound', 'released');
  await watchShows(0);
  await eventually(() => { if (vethThere(name)) throw new Error('veth still there'); }, { what: 'veth deleted' });
}

test.serial('the second DEL, with CNI_NETNS empty, succeeds with zero controller requests', async (t) => {
  const a = c.lab.pod('a');
  const add = await cni('ADD', 'a', a);
  t.is(add.code, 0, add.stdout + add.stderr);
  await firstDel(t, 'a', a);

  const from = proxy.requests.length;
  const logFrom = c.logs(c.hosts[0]).length;
  for (let i = 0; i < 2; i++) {
    const again = await cni('DEL', 'a', undefined);
    t.is(again.code, 0, again.stdout + again.stderr);
  }
  t.deepEqual(proxy.requests.slice(from), [], 'no controller request');
  // The agent's log lines reach this process through a pipe, after its answers: waited for.
  const answered = await eventually(() => {
    const dels = c.logs(c.hosts[0]).slice(logFrom).filter((l) => l.msg === 'DEL' && l.containerId === 'ctr-a');
    if (dels.length < 2) throw new Error(`${dels.length} DEL lines`);
    return dels;
  }, { what: 'both DELs logged' });
  t.deepEqual(answered.map((l) => l.outcome), ['already-gone', 'already-gone']);

  // A new ADD of the same attachment: its DEL goes to the controller again.
  const add2 = await cni('ADD', 'a', a);
  t.is(add2.code, 0, add2.stdout + add2.stderr);
  await watchShows(1);
  const from2 = proxy.requests.length;
  const del2 = await cni('DEL', 'a', undefined);
  t.is(del2.code, 0, del2.stdout + del2.stderr);
  t.true(releases(from2).length >= 1, 'released through the controller');
  t.true((await leaseState('a')) !== 'bound');
});

test.serial('a DEL of an attachment whose binding exists but whose veth is gone still releases', async (t) => {
  const b = c.lab.pod('b');
  const add = await cni('ADD', 'b', b);
  t.is(add.code, 0, add.stdout + add.stderr);
  await watchShows(1);
  nsExec(c.hosts[0].sim, 'ip', 'link', 'del', vethNameFor('ctr-b', 'eth0'));
  const from = proxy.requests.length;
  const del = await cni('DEL', 'b', undefined);
  t.is(del.code, 0, del.stdout + del.stderr);
  t.true(releases(from).length >= 1, `released through the controller: ${proxy.requests.slice(from).join(', ')}`);
  t.true((await leaseState('b')) !== 'bound');
  await watchShows(0);
});

test.serial('an agent that restarted knows no release: the second DEL asks the controller', async (t) => {
  const d = c.lab.pod('d');
  const add = await cni('ADD', 'd', d);
  t.is(add.code, 0, add.stdout + add.stderr);
  await firstDel(t, 'd', d);
  await c.stopAgent(c.hosts[0]);
  await c.startAgent(c.hosts[0], { controllerUrl: proxy.url });
  const from = proxy.requests.length;
  const again = await cni('DEL', 'd', undefined);
  t.is(again.code, 0, again.stdout + again.stderr);
  t.true(proxy.requests.length > from, 'the controller was asked');
});
