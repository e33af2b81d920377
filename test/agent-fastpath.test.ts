/**
 * The pod-to-pod fast path (agent --fast-path) with real agents, BPF and
 * tcx in simulated hosts. Whether a packet took the shortcut is visible in
 * its TTL: each host stack that forwards it decrements it, the fast path
 * doesn't. An echo reply (sent with 64) that went back through both hosts'
 * stacks arrives with 62, through one with 63, on the shortcut at both
 * ends with 64. A missing map entry or program falls back to the routes,
 * so connectivity must hold either way.
 */
import test from 'ava';
import type { AgentRequest } from '../common/agent-protocol';
import { sendAgentRequest } from './doubles/agent-client';
import { startCluster, type Cluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec, tcpProbe, type Netns } from '../sim/netns';

let c: Cluster;

test.before(async () => {
  // The harness plumbs veths after binding, without telling the agent: a short resync finds them.
  c = await startCluster({ hosts: 3, poolCidr: '198.18.14.0/24', resyncMs: 500, agentEnv: { BERTH_FAST_PATH: '1' } });
});
test.after.always(async () => {
  await c?.teardown();
});

/** TTL of one echo reply from ip, or undefined when there was none. */
function replyTtl(from: Netns, ip: string): number | undefined {
  try {
    const out = nsExec(from, 'ping', '-c', '1', '-W', '1', ip);
    const m = /ttl=(\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const ttlBecomes = (from: Netns, ip: string, want: number, what: string) =>
  eventually(() => {
    const got = replyTtl(from, ip);
    if (got !== want) throw new Error(`ttl ${got ?? 'none'}, want ${want}`);
  }, { timeoutMs: 10_000, what });

test.serial('the agents load the fast path and cross-host pod traffic takes it both ways', async (t) => {
  const [h1, h2] = c.hosts;
  for (const h of c.hosts) await c.waitLog(h, (l) => /^fast path on/.test(l.msg));
  const a = await c.plumbPod(h1, 'fp-a');
  const b = await c.plumbPod(h2, 'fp-b');
  await c.waitConverged();
  await ttlBecomes(a.ns, b.ip, 64, 'a -> b on the fast path');
  await c.lab.echoServer(b.ns, b.ip, 7101);
  t.is(tcpProbe(a.ns, b.ip, 7101), a.ip, 'TCP works and the source is intact');
  await c.unplumbPod(a);
  await c.unplumbPod(b);
  await c.waitConverged();
});

test.serial('an address moving to another host is followed by the fast path', async (t) => {
  const [h1, h2, h3] = c.hosts;
  const watcher = await c.plumbPod(h3, 'fp-watch');
  let mover = await c.plumbPod(h1, 'fp-mover');
  const ip = mover.ip;
  await c.waitConverged();
  await ttlBecomes(watcher.ns, ip, 64, 'watcher -> mover on h1');
  await c.unplumbPod(mover);
  mover = await c.plumbPod(h2, 'fp-mover');
  t.is(mover.ip, ip, 'the identity kept its address');
  await c.waitConverged();
  await ttlBecomes(watcher.ns, ip, 64, 'watcher -> mover on h2');
  t.regex(nsExec(h2.sim, 'ip', 'route', 'show', `${ip}/32`), /dev berth0/);
  await c.unplumbPod(mover);
  await c.unplumbPod(watcher);
  await c.waitConverged();
});

test.serial('with an agent stopped its programs are gone and traffic falls back to the routes', async (t) => {
  const [h1, h2] = c.hosts;
  const a = await c.plumbPod(h1, 'fp-a2');
  const b = await c.plumbPod(h2, 'fp-b2');
  await c.waitConverged();
  await ttlBecomes(a.ns, b.ip, 64, 'both agents up');
  await c.stopAgent(h2);
  // h1 still shortcuts the reply into a; h2's stack now forwards it out of b.
  await ttlBecomes(a.ns, b.ip, 63, 'h2 through its host stack');
  await c.startAgent(h2);
  await ttlBecomes(a.ns, b.ip, 64, 'h2 back on the fast path');
  t.pass();
  await c.unplumbPod(a);
  await c.unplumbPod(b);
  await c.waitConverged();
});

test.serial('CNI ADD points the fast path at the new pod and DEL takes it away, through the agent socket', async (t) => {
  const [h1, h2] = c.hosts;
  const peer = await c.plumbPod(h2, 'fp-peer');
  const pod = c.lab.pod('fp-cni');
  const req = (verb: AgentRequest['verb']): AgentRequest => ({
    verb, containerId: 'fp-cni-1', netns: pod.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'fp', K8S_POD_NAME: 'cni' }, network: 'berth-net', pool: c.pool.name,
  });
  const add = await sendAgentRequest(h1.socket, req('ADD'), 10_000);
  if (!add.ok) return t.fail(JSON.stringify(add));
  const ip = add.result?.ips?.[0]?.address.split('/')[0] ?? '';
  t.regex(ip, /^198\.18\.14\./);
  await ttlBecomes(peer.ns, ip, 64, 'peer -> CNI pod on the fast path');
  t.like(await sendAgentRequest(h1.socket, req('DEL'), 10_000), { ok: true });
  t.is(replyTtl(peer.ns, ip), undefined, 'nothing answers for the released address');
  t.deepEqual(c.logs(h1).filter((l) => /fast path (update failed|refused)/.test(l.msg)), []);
  await c.unplumbPod(peer);
  await c.waitConverged();
});
