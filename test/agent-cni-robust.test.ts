/**
 * The agent's CNI side against hostile or broken input, on real parts (a
 * real etcd and controller, a simulated host with berth0, the handlers
 * behind a real socket, the relay binary exec'd as a runtime does):
 *   - CNI_NETNS that is no network namespace (a FIFO once froze the agent);
 *   - an ADD that fails after its kernel steps leaves nothing behind;
 *   - a config with a dns block over 1 MiB: ADD answers, and DEL still cleans up.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import { BIN, type ExecResult } from '../sim/exec';
import { eventually } from '../sim/eventually';
import { nsExec } from '../sim/netns';
import { startCniBackend, startSite, type CniBackend, type Site } from './harness/cni-site';

let backend: CniBackend;

test.before(async () => {
  backend = await startCniBackend();
});
test.after.always(async () => {
  await backend?.stop();
});

const site = (t: ExecutionContext, cidr: string): Promise<Site> => startSite(t, backend.ctl.url, { cidr });
const hostVeths = (s: Site) => nsExec(s.host, 'ip', '-o', 'link', 'show', 'type', 'veth');
const hostRoutes = (s: Site) => nsExec(s.host, 'ip', 'route', 'show', 'proto', '190');
const leaseOf = async (s: Site, identity: string) => (await backend.admin.leases({ pool: s.pool, identity })).leases[0];

/** One request over the agent socket, as the plugin sends it. */
function ask(socket: string, req: AgentRequest): Promise<AgentResponse> {
  return new Promise((resolve, reject) => {
    const c = connect({ path: socket });
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('close', () => { try { resolve(JSON.parse(out) as AgentResponse); } catch (e) { reject(e); } });
    c.on('error', reject);
    c.on('connect', () => c.write(`${JSON.stringify(req)}\n`));
  });
}

const addReq = (s: Site, cid: string, netns: string): AgentRequest => ({
  verb: 'ADD', containerId: cid, netns, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: cid }, network: 'berth-net', pool: s.pool,
});

test('CNI_NETNS that is no network namespace: a clear error, nothing bound or created, and the agent keeps serving', async (t) => {
  const s = await site(t, '198.18.41.0/24');
  const bad = join(s.dir, 'bad');
  mkdirSync(bad);
  const fifo = join(bad, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const file = join(bad, 'file');
  writeFileSync(file, '');
  // A deadlock breaker, never meant to fire: if the agent (this process) blocks opening the
  // FIFO, a reader-writer open from another process releases it, and leaves a mark.
  const valveMark = join(s.dir, 'valve-fired');
  const valve = spawn(process.execPath, ['-e', `setTimeout(() => { require('fs').writeFileSync(${JSON.stringify(valveMark)}, ''); require('fs').openSync(${JSON.stringify(fifo)}, 'r+'); }, 15000)`], { stdio: 'ignore' });
  t.teardown(() => { if (valve.exitCode === null && valve.pid) process.kill(valve.pid, 'SIGKILL'); });

  // Straight to the socket (a runtime could swap the path after the plugin looked):
  // the FIFO request first, then a good ADD and the other bad paths.
  const pod = s.lab.pod('pod');
  const fifoAnswer = ask(s.server.socketPath, addReq(s, 'fifo', fifo));
  const good = ask(s.server.socketPath, addReq(s, 'good', pod.path));
  const cases: [string, string, string][] = [
    ['file', file, 'InvalidRequest'], ['dir', bad, 'InvalidRequest'], ['devnull', '/dev/null', 'InvalidRequest'],
    ['missing', join(bad, 'missing'), 'NotFound'], ['mntns', '/proc/self/ns/mnt', 'InvalidRequest'],
  ];
  const answers = await Promise.all(cases.map(([cid, p]) => ask(s.server.socketPath, addReq(s, cid, p))));
  t.like(await good, { ok: true }, 'a good ADD is served meanwhile');
  t.like(await fifoAnswer, { ok: false, error: { code: 'InvalidRequest', msg: 'not a network namespace', details: fifo } });
  cases.forEach(([cid, p, kind], i) => {
    t.like(answers[i], { ok: false, error: { code: kind } }, cid);
    if (kind === 'InvalidRequest') t.like(answers[i], { ok: false, error: { msg: 'not a network namespace', details: p } }, cid);
  });
  t.false(existsSync(valveMark), 'the agent never blocked on the FIFO');

  // Through the plugin, as a runtime does: the relay passes what it opened, and the
  // CNI front in the agent answers 4 (invalid CNI_NETNS) for each, before any handler.
  const viaPlugin = async (cid: string, p: string): Promise<ExecResult> => s.cni('ADD', cid, { name: 'x', path: p });
  for (const [cid, p, why] of [['pfifo', fifo, /not a network namespace/], ['pfile', file, /not a network namespace/], ['pnull', '/dev/null', /not a network namespace/],
    ['pdir', bad, /not a network namespace/], ['pmissing', join(bad, 'missing'), /no network namespace/]] as const) {
    const r = await viaPlugin(cid, p);
    t.is(r.code, 1, cid);
    t.is(r.json?.code, 4, `${cid}: ${r.stdout}`);
    t.regex(r.json?.msg ?? '', /CNI_NETNS/, cid);
    t.regex(r.json?.details ?? '', why, cid);
  }
  // Nothing of the refused ADDs exists: no lease, no veth, one route (the good pod's).
  for (const cid of ['fifo', 'file', 'dir', 'devnull', 'missing', 'mntns', 'pfifo', 'pfile', 'pnull']) t.falsy(await leaseOf(s, `k8s/web/${cid}`), cid);
  t.is(hostVeths(s).trim().split('\n').length, 1, 'only the good pod has a veth');
  t.is(hostRoutes(s).trim().split('\n').length, 1);
});

/** A dns block of about 1.5 MiB: 70,000 search domains. */
const hugeDns = () => ({ nameservers: ['198.18.0.53'], search: Array.from({ length: 70_000 }, (_, i) => `s${i}.example.test`) });

const vethsGone = (s: Site) => eventually(() => { if (/bth/.test(hostVeths(s))) throw new Error('a berth veth is still there'); }, { what: 'veth deleted' });

test('an ADD with a dns block over the limit is refused with 7 before anything exists', async (t) => {
  const s = await site(t, '198.18.42.0/24');
  const pod = s.lab.pod('pod');
  const r = await s.cni('ADD', 'bigdns', pod, { extra: { dns: hugeDns() } });
  t.is(r.code, 1);
  t.like(r.json, { code: 7, msg: 'dns block too large' });
  t.regex(r.json.details, /dns: \d+ bytes, at most 65536/);
  t.falsy(await leaseOf(s, 'k8s/web/bigdns'));
  t.notRegex(hostVeths(s), /bth/);
  t.is(hostRoutes(s).trim(), '');
});

test('DEL and CHECK work whatever the runtime cached: a prevResult and config with a >1 MiB dns block', async (t) => {
  const s = await site(t, '198.18.43.0/24');
  const pod = s.lab.pod('pod');
  const add = await s.cni('ADD', 'cached', pod, { extra: { dns: { nameservers: ['198.18.0.53'] } } });
  t.is(add.code, 0, add.stdout);
  const cached = { ...add.json, dns: hugeDns() };
  const check = await s.cni('CHECK', 'cached', pod, { extra: { dns: hugeDns(), prevResult: cached } });
  t.is(check.code, 0, check.stdout);
  const del = await s.cni('DEL', 'cached', pod, { extra: { dns: hugeDns(), prevResult: cached } });
  t.is(del.code, 0, del.stdout);
  t.not((await leaseOf(s, 'k8s/web/cached'))?.state, 'bound');
  t.is(hostRoutes(s).trim(), '');
  await vethsGone(s);
});

test('an ADD whose result cannot be delivered undoes itself: no veth, no route, the lease not bound', async (t) => {
  const s = await site(t, '198.18.44.0/24');
  const pod = s.lab.pod('pod');
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'lost', CNI_NETNS: pod.path, CNI_IFNAME: 'eth0',
    CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=lost', CNI_PATH: '/usr/lib/cni',
  };
  // The runtime goes away before the result: its end of stdout is closed.
  const child = spawn(BIN, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout!.destroy();
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdin!.on('error', () => undefined);
  child.stdin!.end(JSON.stringify(s.conf('1.1.0')));
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  t.is(code, 1, stderr);
  t.regex(stderr, /output not delivered/);
  t.not((await leaseOf(s, 'k8s/web/lost'))?.state, 'bound', 'the lease this ADD allocated was released');
  t.is(hostRoutes(s).trim(), '');
  await vethsGone(s);
});
