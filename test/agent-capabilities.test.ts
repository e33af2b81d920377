/**
 * The agent with --fast-path under exactly the capabilities the DaemonSet
 * lists (read from deploy/kubernetes/base/agent.yaml, bounded with setpriv):
 * the fast path loads (BPF maps and tcx programs), cross-host pod traffic
 * takes it (an echo reply arrives with TTL 64: no host stack forwarded it),
 * and a pod is created through the relay (setns into its namespace). The
 * manifest-executed test (k8s-manifest-exec) covers the agent as the
 * manifest runs it, without --fast-path.
 */
import test from 'ava';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime } from '../demo/runtime';
import { startCluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { nsExec } from '../sim/netns';
import { K8S_DIR, parseYamlDocs } from './harness/k8s';
import { containerCapabilities, effectiveCapabilities } from './harness/kubelet';
import { podRoundTrip } from './harness/plugin';

const ROOT = join(__dirname, '../..');

test('with the manifest\'s capabilities, --fast-path loads and carries pod traffic, and CNI ADD enters the pod\'s namespace', async (t) => {
  const [ds] = parseYamlDocs(readFileSync(join(K8S_DIR, 'base/agent.yaml'), 'utf8'), 'agent.yaml') as any[];
  const agent = ds.spec.template.spec.containers.find((x: any) => x.name === 'agent');
  const caps: string[] = containerCapabilities(agent);
  t.true(caps.length > 0);
  const wrap = ['setpriv', '--bounding-set', ['-all', ...caps.map((x) => `+${x.toLowerCase()}`)].join(','), '--inh-caps', '-all', '--'];

  const c = await startCluster({ hosts: 2, poolCidr: '198.18.46.0/24', resyncMs: 500 });
  t.teardown(() => c.teardown());
  const [h1, h2] = c.hosts;
  for (const h of c.hosts) {
    await c.stopAgent(h);
    const from = c.logs(h).length;
    await c.startAgent(h, { wrap, args: ['--fast-path'] });
    await c.waitLog(h, (l) => /^fast path (on|unavailable)/.test(l.msg), { fromLine: from }).then((l) => t.regex(l.msg, /^fast path on/, JSON.stringify(l)));
    t.deepEqual(effectiveCapabilities(readFileSync(`/proc/${h.pid}/status`, 'utf8')), [...caps].sort());
  }

  const a = await c.plumbPod(h1, 'caps-a');
  const b = await c.plumbPod(h2, 'caps-b');
  await c.waitConverged();
  await eventually(() => {
    const ttl = /ttl=(\d+)/.exec(nsExec(a.ns, 'ping', '-c', '1', '-W', '1', b.ip))?.[1];
    if (ttl !== '64') throw new Error(`ttl ${ttl}`);
  }, { timeoutMs: 10_000, what: 'a -> b on the fast path' });

  const binDir = join(c.dir, 'bin');
  mkdirSync(binDir);
  copyFileSync(join(ROOT, 'dist/bin/berth'), join(binDir, 'berth'));
  const conflist = join(c.dir, '10-berth.conflist');
  writeFileSync(conflist, JSON.stringify({ cniVersion: '1.0.0', name: 'berth', plugins: [{ type: 'berth', pool: c.pool.name, agentSocket: h1.socket, journalDir: h1.journalDir }] }));
  const result = await podRoundTrip(t, c, new CniRuntime(binDir, conflist), h1, 'caps-c', 'caps0123');
  t.true(String(result.ips[0].address).startsWith('198.18.46.'));
  // Any warning or error counts (a missing capability surfaces as a refused op, a failed
  // firewall pass, a failed rollback...), except ADD's bounded wait for the firewall running
  // out on a loaded machine: that one is a timeout, not a refusal (a refused sync carries
  // its error in that line and in its own "firewall pass" warning, and still counts).
  const timedOut = (l: { msg: string; error?: unknown }) => l.msg.startsWith('pod admitted before the firewall took it') && /^no sync within \d+ ms$/.test(String(l.error));
  const trouble = c.logs(h1).filter((l) => (l.level === 'warn' || l.level === 'error') && !timedOut(l));
  t.deepEqual(trouble.map((l) => JSON.stringify(l)), [], 'nothing refused along the way');
});
