/**
 * The agent's CNI verbs end to end, on real parts: a real etcd, a real
 * controller, a simulated host (a Lab namespace with berth0) and pod
 * namespaces, the handlers behind a real startCniServer socket, and the
 * `berth` relay binary exec'd exactly as a runtime does, across every
 * supported cniVersion. Needs root; touches only bth-* namespaces.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import { ControllerClient } from '../common/controller-client';
import { SUPPORTED_VERSIONS, versionAtLeast } from '../common/cni-version';
import { addressAt, parseCidr } from '../common/cidr';
import { readDelJournal } from '../common/del-journal';
import { silentLogger } from '../common/log';
import type { RunningController } from '../controller/app';
import { startCniServer } from '../agent/cni-server';
import { createCniHandler } from '../agent/cni-handlers';
import type { CniHandler } from '../agent/cni-api';
import { replayJournal } from '../agent/journal-replay';
import { desiredState } from '../agent/desired';
import { planChanges } from '../agent/plan';
import { vethNameFor } from '../agent/kernel/links';
import { observe } from '../agent/kernel/state';
import { execPlugin, type ExecResult } from '../sim/exec';
import { startCniBackend, startSite, type CniBackend, type Site } from './harness/cni-site';
import { nsExec, nsTry, randomTag } from '../sim/netns';
import { eventually } from '../sim/eventually';

let backend: CniBackend;
let ctl: RunningController;
let admin: ControllerClient;

test.before(async () => {
  backend = await startCniBackend();
  ({ ctl, admin } = backend);
});

async function site(t: ExecutionContext, o: { cidr?: string } = {}): Promise<Site> {
  return startSite(t, ctl.url, o);
}

test.after.always(async () => {
  await backend?.stop();
});

function ok(t: ExecutionContext, r: ExecResult, what: string): void {
  t.is(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
}

function addressOf(r: ExecResult): string {
  return (r.json.ips[0].address as string).split('/')[0];
}

const hostVeths = (s: Site) => nsExec(s.host, 'ip', '-o', 'link', 'show', 'type', 'veth');

/**
 * DEL's contract for the veth: out of service when DEL answers (down, off
 * the bridge), deleted shortly after in the background (agent/kernel/pod.ts).
 */
async function vethsRetiredThenGone(t: ExecutionContext, s: Site, msg?: string): Promise<void> {
  for (const line of hostVeths(s).split('\n').filter((l) => /bth/.test(l))) {
    t.notRegex(line, /master|[<,]UP[,>]/, `retired at once: ${line}`);
  }
  await eventually(() => {
    if (/bth/.test(hostVeths(s))) throw new Error('a berth veth is still there');
  }, { what: msg ?? 'veth deleted' });
  t.pass(msg);
}
const hostRoutes = (s: Site) => nsExec(s.host, 'ip', 'route', 'show', 'proto', '190');

async function leaseOf(s: Site, identity: string) {
  return (await admin.leases({ pool: s.pool, identity })).leases[0];
}

for (const v of SUPPORTED_VERSIONS) {
  test(`cniVersion ${v}: ADD plumbs the pod, a repeated ADD gives the same result, CHECK passes, DEL twice succeeds`, async (t) => {
    const s = await site(t);
    const pod = s.lab.pod('pod');
    const cid = `c-${v.replace(/\./g, '')}`;
    const add = await s.cni('ADD', cid, pod, { version: v });
    ok(t, add, 'ADD');
    t.is(add.json.cniVersion, v);
    const ip = addressOf(add);
    t.is(add.json.ips[0].address, `${ip}/32`, 'the result reports the configured /32');
    t.is(add.json.ips[0].gateway, s.gateway);
    t.deepEqual(add.json.routes, [{ dst: '0.0.0.0/0', gw: s.gateway }]);
    t.is(add.json.interfaces[0].name, vethNameFor(cid, 'eth0'));
    t.is(add.json.interfaces[1].sandbox, pod.path);

    t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'eth0'), new RegExp(`inet ${ip.replace(/\./g, '\\.')}/32`));
    t.regex(nsExec(pod, 'ip', '-o', 'link', 'show', 'dev', 'eth0'), /mtu 1450 .*state UP/);
    t.regex(nsExec(pod, 'ip', 'route', 'show', 'default'), new RegExp(`default via ${s.gateway} dev eth0 .*onlink`));
    t.regex(hostRoutes(s), new RegExp(`^${ip.replace(/\./g, '\\.')} dev berth0 scope link`, 'm'));
    t.regex(nsExec(s.host, 'ip', '-o', 'link', 'show', vethNameFor(cid, 'eth0')), /master berth0 .*state UP/);
    const lease = await leaseOf(s, `k8s/web/${cid}`);
    t.like(lease, { ip, state: 'bound', binding: { host: s.hostName, containerId: cid, ifName: 'eth0' } });
    t.true(s.dirty.n >= 1, 'ADD marks the reconcile loop dirty');

    const again = await s.cni('ADD', cid, pod, { version: v });
    ok(t, again, 'repeated ADD');
    t.deepEqual(again.json, add.json, 'a repeated ADD returns the same result');

    if (versionAtLeast(v, '0.4.0')) ok(t, await s.cni('CHECK', cid, pod, { version: v, extra: { prevResult: add.json } }), 'CHECK');

    ok(t, await s.cni('DEL', cid, pod, { version: v, extra: { prevResult: add.json } }), 'DEL');
    ok(t, await s.cni('DEL', cid, pod, { version: v }), 'second DEL');
    await vethsRetiredThenGone(t, s);
    t.notRegex(hostRoutes(s), new RegExp(ip.replace(/\./g, '\\.')));
    t.false(nsTry(pod, 'ip', 'link', 'show', 'eth0'), 'the pod side went with the host side');
    t.like(await leaseOf(s, `k8s/web/${cid}`), { ip, state: 'held' });
  });
}

test('the host route ADD installs is exactly what the reconciler wants: no plan after ADD; the result\'s MACs are the interfaces\' own', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const add = await s.cni('ADD', 'recon', pod);
  ok(t, add, 'ADD');
  // The MACs the result reports are the interfaces' own (the host side's is Berth's choice, not read back).
  const [hostIf, podIf] = add.json.interfaces as { name: string; mac: string }[];
  t.regex(nsExec(s.host, 'ip', '-o', 'link', 'show', hostIf.name), new RegExp(`link/ether ${hostIf.mac} `));
  t.regex(nsExec(pod, 'ip', '-o', 'link', 'show', podIf.name), new RegExp(`link/ether ${podIf.mac} `));
  const { leases } = await admin.leases({ pool: s.pool });
  const desired = desiredState({ self: s.hostName, hosts: [], leases, pool: { name: s.pool, cidr: s.cidr, gateway: s.gateway }, underlayMtu: 1500 });
  const actual = await observe(s.hostNl);
  t.is(desired.routes.length, 1);
  t.deepEqual(planChanges({ ...desired, neighs: [], fdbs: [] }, actual), []);
});

test('the same identity gets its address back in a new container; DEL without CNI_ARGS or CNI_NETNS still releases', async (t) => {
  const s = await site(t);
  const pod1 = s.lab.pod('p1');
  const first = await s.cni('ADD', 'old', pod1, { args: 'K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0' });
  ok(t, first, 'ADD old');
  // DEL from "another process": no args, netns already gone.
  ok(t, await s.cni('DEL', 'old', undefined, { args: '' }), 'DEL without args and netns');
  t.like(await leaseOf(s, 'k8s/db/db-0'), { state: 'held' });
  await vethsRetiredThenGone(t, s);

  const pod2 = s.lab.pod('p2');
  const second = await s.cni('ADD', 'new', pod2, { args: 'K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0' });
  ok(t, second, 'ADD new');
  t.is(addressOf(second), addressOf(first));
  // A late DEL of the old container must not take the address or route from the new one.
  ok(t, await s.cni('DEL', 'old', undefined, { args: 'K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0' }), 'late DEL of old');
  t.like(await leaseOf(s, 'k8s/db/db-0'), { state: 'bound', binding: { containerId: 'new' } });
  t.regex(hostRoutes(s), new RegExp(`^${addressOf(second).replace(/\./g, '\\.')} dev berth0`, 'm'));
});

test('ADD failing after bind (interface name taken in the pod) leaves nothing and releases the new lease', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  nsExec(pod, 'ip', 'link', 'add', 'eth0', 'type', 'bridge');
  const r = await s.cni('ADD', 'clash', pod);
  t.is(r.code, 1);
  t.is(r.json.code, 112, r.stdout);
  t.notRegex(hostVeths(s), /bth/);
  t.is(hostRoutes(s).trim(), '');
  t.falsy(await leaseOf(s, 'k8s/web/clash'), 'the lease this ADD allocated was freed, not held');
  t.regex(nsExec(pod, 'ip', '-o', 'link', 'show', 'eth0'), /eth0/, "the pod's own interface is untouched");
});

test('failed ADDs do not park addresses: a one-address pool still serves the next pod', async (t) => {
  const s = await site(t, { cidr: '198.18.8.0/30' }); // .1 gateway, .2 the only address
  for (let i = 0; i < 3; i++) {
    const pod = s.lab.pod(`bad${i}`);
    nsExec(pod, 'ip', 'link', 'add', 'eth0', 'type', 'bridge');
    const r = await s.cni('ADD', `fail-${i}`, pod);
    t.is(r.json?.code, 112, r.stdout);
  }
  t.deepEqual((await admin.leases({ pool: s.pool })).leases, []);
  const good = s.lab.pod('good');
  const r = await s.cni('ADD', 'good', good);
  ok(t, r, 'ADD after failed ADDs');
  t.is(addressOf(r), '198.18.8.2');
});

test('ADD failing for a lease it did not allocate leaves that lease bound', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  ok(t, await s.cni('ADD', 'keep', pod), 'ADD');
  nsExec(s.host, 'ip', 'link', 'del', 'berth0');
  const r = await s.cni('ADD', 'keep', pod);
  t.is(r.json?.code, 11, r.stdout);
  t.like(await leaseOf(s, 'k8s/web/keep'), { state: 'bound', binding: { containerId: 'keep' } });
  t.notRegex(hostVeths(s), /bth/);
});

test('an exhausted pool is 101 and changes nothing; STATUS says 50', async (t) => {
  const s = await site(t, { cidr: '198.18.7.0/30' }); // .1 gateway, .2 the only address
  const a = s.lab.pod('a');
  const b = s.lab.pod('b');
  ok(t, await s.cni('ADD', 'only', a), 'ADD only');
  const before = (await admin.leases({ pool: s.pool })).leases;
  const r = await s.cni('ADD', 'extra', b);
  t.is(r.json?.code, 101, r.stdout);
  t.deepEqual((await admin.leases({ pool: s.pool })).leases, before);
  t.false(nsTry(b, 'ip', 'link', 'show', 'eth0'));
  t.is(hostVeths(s).trim().split('\n').length, 1, 'only the first pod has a veth');
  const st = await s.cni('STATUS', '', undefined);
  t.is(st.json?.code, 50, st.stdout);
  t.regex(st.json.details, /full/);
});

test('CHECK passes on a healthy pod and names what is wrong after the pod address is removed', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const add = await s.cni('ADD', 'chk', pod);
  ok(t, add, 'ADD');
  ok(t, await s.cni('CHECK', 'chk', pod, { extra: { prevResult: add.json } }), 'CHECK');
  const ip = addressOf(add);
  nsExec(pod, 'ip', 'addr', 'del', `${ip}/32`, 'dev', 'eth0');
  const bad = await s.cni('CHECK', 'chk', pod, { extra: { prevResult: add.json } });
  t.is(bad.json?.code, 113, bad.stdout);
  t.regex(bad.json.details, new RegExp(`lacks ${ip.replace(/\./g, '\\.')}/32`));
  nsExec(s.host, 'ip', 'route', 'del', `${ip}/32`, 'dev', 'berth0');
  const worse = await s.cni('CHECK', 'chk', pod, { extra: { prevResult: add.json } });
  t.regex(worse.json.details, /host route .* is missing/);
});

test('GC releases exactly the leases not in the valid list and removes their veths', async (t) => {
  const s = await site(t);
  const pods = ['g1', 'g2', 'g3'].map((c) => ({ c, pod: s.lab.pod(c) }));
  for (const { c, pod } of pods) ok(t, await s.cni('ADD', c, pod), `ADD ${c}`);
  const gc = await s.cni('GC', '', undefined, { extra: { 'cni.dev/valid-attachments': [{ containerID: 'g1', ifname: 'eth0' }] } });
  ok(t, gc, 'GC');
  t.is(gc.stdout.trim(), '');
  t.like(await leaseOf(s, 'k8s/web/g1'), { state: 'bound' });
  t.like(await leaseOf(s, 'k8s/web/g2'), { state: 'held' });
  t.like(await leaseOf(s, 'k8s/web/g3'), { state: 'held' });
  const veths = hostVeths(s);
  t.regex(veths, new RegExp(vethNameFor('g1', 'eth0')));
  t.notRegex(veths, new RegExp(`${vethNameFor('g2', 'eth0')}|${vethNameFor('g3', 'eth0')}`));
  t.is(hostRoutes(s).trim().split('\n').length, 1);
});

test('STATUS: ok when healthy, 50 when the agent socket is gone, 51 when etcd is unreachable', async (t) => {
  const s = await site(t);
  ok(t, await s.cni('STATUS', '', undefined), 'STATUS');
  const gone = await execPlugin({ CNI_COMMAND: 'STATUS' }, s.conf('1.1.0', { agentSocket: join(s.dir, 'nobody.sock') }));
  t.is(gone.json?.code, 50, gone.stdout);
  const limited = await createCniHandler({ ...s.deps, etcdHealthy: async () => false })(statusReq(s.pool));
  t.like(limited, { ok: false, error: { code: 'PluginLimited', cniCode: 51 } });
  const noPool = await s.handler(statusReq('no-such-pool'));
  t.like(noPool, { ok: false, error: { code: 'PluginNotAvailable' } });
});

function statusReq(pool: string): AgentRequest {
  return { verb: 'STATUS', containerId: '', netns: '', ifName: '', args: {}, network: 'berth-net', pool };
}

test('DEL with the agent down is journalled and replayJournal releases it; an ADD after the DEL supersedes it', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const down = join(s.dir, 'down.sock');
  ok(t, await s.cni('ADD', 'j1', pod), 'ADD j1');
  const del = await execPlugin({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'j1', CNI_NETNS: pod.path, CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=j1' },
    s.conf('1.0.0', { agentSocket: down }));
  ok(t, del, 'DEL with the agent down');
  t.is((await readDelJournal(s.journalDir)).entries.length, 1);
  t.like(await leaseOf(s, 'k8s/web/j1'), { state: 'bound' }, 'nothing released yet');

  t.deepEqual(await replayJournal(s.journalDir, s.handler, silentLogger), { replayed: 1, failed: 0 });
  t.like(await leaseOf(s, 'k8s/web/j1'), { state: 'held' });
  await vethsRetiredThenGone(t, s);
  t.is((await readDelJournal(s.journalDir)).entries.length, 0);

  // Same container id: DEL journalled, then ADD again through the agent. Replay must not undo it.
  const pod2 = s.lab.pod('pod2');
  ok(t, await s.cni('ADD', 'j2', pod2), 'ADD j2');
  ok(t, await execPlugin({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'j2', CNI_NETNS: pod2.path, CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=j2' },
    s.conf('1.0.0', { agentSocket: down })), 'DEL j2 with the agent down');
  ok(t, await s.cni('ADD', 'j2', pod2), 'ADD j2 again');
  t.is((await readDelJournal(s.journalDir)).entries.length, 0, 'the ADD dropped the older DEL');
  t.deepEqual(await replayJournal(s.journalDir, s.handler, silentLogger), { replayed: 0, failed: 0 });
  t.like(await leaseOf(s, 'k8s/web/j2'), { state: 'bound', binding: { containerId: 'j2' } });
});

test('a failed replay keeps its entry for the next pass', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  ok(t, await s.cni('ADD', 'r1', pod), 'ADD');
  ok(t, await execPlugin({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'r1', CNI_NETNS: pod.path, CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=r1' },
    s.conf('1.0.0', { agentSocket: join(s.dir, 'down.sock') })), 'journalled DEL');
  const dead = new ControllerClient({ url: 'http://127.0.0.1:1', timeoutMs: 2000 });
  t.teardown(() => dead.close());
  const offline = createCniHandler({ ...s.deps, controller: dead });
  t.deepEqual(await replayJournal(s.journalDir, offline, silentLogger), { replayed: 0, failed: 1 });
  t.is((await readDelJournal(s.journalDir)).entries.length, 1);
  await vethsRetiredThenGone(t, s, 'the veth went even though the release could not');
  t.deepEqual(await replayJournal(s.journalDir, s.handler, silentLogger), { replayed: 1, failed: 0 });
  t.like(await leaseOf(s, 'k8s/web/r1'), { state: 'held' });
});

test('an ADD right after DEL of the same attachment waits for the background veth deletion, then plumbs afresh', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const req = (verb: 'ADD' | 'DEL'): AgentRequest => ({
    verb, containerId: 'again', netns: pod.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'again' }, network: 'berth-net', pool: s.pool,
  });
  const first = await s.handler(req('ADD'));
  t.like(first, { ok: true });
  const oldIndex = nsExec(s.host, 'ip', '-o', 'link', 'show', vethNameFor('again', 'eth0')).split(':')[0];
  t.like(await s.handler(req('DEL')), { ok: true });
  // No exec in between: the old pair is still being deleted when this ADD starts.
  const second = await s.handler(req('ADD'));
  t.like(second, { ok: true }, JSON.stringify(second));
  const hv = nsExec(s.host, 'ip', '-o', 'link', 'show', vethNameFor('again', 'eth0'));
  t.not(hv.split(':')[0], oldIndex, 'a new pair, not the retired one');
  t.regex(hv, /master berth0 .*state UP/);
  t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'eth0'), /inet 198\.18\./);
});

test('DEL with the controller unreachable removes the veth, is journalled and succeeds; the replay releases', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  ok(t, await s.cni('ADD', 'cd', pod), 'ADD');
  const dead = new ControllerClient({ url: 'http://127.0.0.1:1', timeoutMs: 2000 });
  t.teardown(() => dead.close());
  const req: AgentRequest = { verb: 'DEL', containerId: 'cd', netns: pod.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'cd' }, network: 'berth-net', pool: s.pool };
  const offline = createCniHandler({ ...s.deps, controller: dead });
  t.like(await offline(req), { ok: true });
  await vethsRetiredThenGone(t, s);
  t.like(await leaseOf(s, 'k8s/web/cd'), { state: 'bound' }, 'not released yet');
  t.is((await readDelJournal(s.journalDir)).entries.length, 1);
  t.deepEqual(await replayJournal(s.journalDir, offline, silentLogger), { replayed: 0, failed: 1 }, 'a replay that still finds no controller keeps the entry');
  t.deepEqual(await replayJournal(s.journalDir, s.handler, silentLogger), { replayed: 1, failed: 0 });
  t.like(await leaseOf(s, 'k8s/web/cd'), { state: 'held' });
  t.is((await readDelJournal(s.journalDir)).entries.length, 0);
});

// ---- the socket itself ----

function rawRequest(path: string, payload: string | Buffer, o: { end?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect({ path });
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('close', () => resolve(out));
    c.on('error', reject);
    c.on('connect', () => (o.end ? c.end(payload) : c.write(payload)));
  });
}

test('the socket answers malformed requests with Decode and keeps serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-cni-sock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let calls = 0;
  const handler: CniHandler = async (req): Promise<AgentResponse> => {
    calls++;
    if (req.containerId === 'boom') throw new Error('handler bug');
    return { ok: true };
  };
  const sockPath = join(dir, 'a', 'b', 'agent.sock');
  const srv = await startCniServer(sockPath, handler, silentLogger);
  t.teardown(() => srv.close());
  t.is(statSync(sockPath).mode & 0o777, 0o600);
  t.is(statSync(join(dir, 'a', 'b')).mode & 0o777, 0o700);

  const decode = (s: string) => (JSON.parse(s) as AgentResponse & { ok: false }).error;
  t.like(decode(await rawRequest(sockPath, 'not json\n')), { code: 'Decode', cniCode: 6 });
  t.like(decode(await rawRequest(sockPath, '[1,2]\n')), { code: 'Decode' });
  t.like(decode(await rawRequest(sockPath, '{"verb":"FLY"}\n')), { code: 'Decode' });
  t.like(decode(await rawRequest(sockPath, '{"verb":"ADD"', { end: true })), { code: 'Decode' });
  t.like(decode(await rawRequest(sockPath, Buffer.alloc((1 << 20) + 10, 0x20))), { code: 'Decode' });
  t.is(calls, 0);
  const good = { ...statusReq('x') };
  t.deepEqual(JSON.parse(await rawRequest(sockPath, `${JSON.stringify(good)}\n`)), { ok: true });
  t.like(decode(await rawRequest(sockPath, `${JSON.stringify({ ...good, containerId: 'boom' })}\n`)), { code: 'Internal' });

  // A second server on a live socket refuses; once closed, a stale file is replaced.
  await t.throwsAsync(startCniServer(sockPath, handler, silentLogger), { message: /I\/O|listening/ });
  await srv.close();
  // A socket file left by a dead process (bound, never unlinked) is replaced.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', sockPath]);
  t.true(statSync(sockPath).isSocket());
  const srv2 = await startCniServer(sockPath, handler, silentLogger);
  t.teardown(() => srv2.close());
  t.deepEqual(JSON.parse(await rawRequest(sockPath, `${JSON.stringify(good)}\n`)), { ok: true });
});

// ---- attachments: network, interface and pool (issue 12, item 4) ----

const linkState = (ns: Site['host'] | ReturnType<Site['lab']['pod']>, dev: string) => nsExec(ns, 'ip', '-o', 'link', 'show', dev);
const re = (ip: string) => ip.replace(/\./g, '\\.');

test("GC of one network never releases another network's attachments in the same pool; a binding with no recorded network goes only once its veth is gone", async (t) => {
  const s = await site(t);
  const a = s.lab.pod('a');
  const b = s.lab.pod('b');
  const c = s.lab.pod('c');
  const onBerth = await s.cni('ADD', 'on-berth', a);
  ok(t, onBerth, 'ADD through berth-net');
  ok(t, await s.cni('ADD', 'on-rtc', b, { extra: { name: 'rtcnet' } }), 'ADD through rtcnet');
  t.like(await leaseOf(s, 'k8s/web/on-berth'), { state: 'bound', binding: { network: 'berth-net' } });
  t.like(await leaseOf(s, 'k8s/web/on-rtc'), { state: 'bound', binding: { network: 'rtcnet' } });
  // Bindings written before the network was recorded: one still plumbed (an ADD that sent no
  // network, as an older plugin does), one whose attachment is gone (bound, never plumbed here).
  const legacy: Omit<AgentRequest, 'network'> = { verb: 'ADD', containerId: 'old-live', netns: c.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'old-live' }, pool: s.pool };
  t.true((await s.handler(legacy as AgentRequest)).ok); // JSON from such a plugin simply lacks the field
  await admin.bind(s.pool, { identity: 'k8s/web/old-gone', host: s.hostName, containerId: 'old-gone', ifName: 'eth0' });
  t.is((await leaseOf(s, 'k8s/web/old-live')).binding?.network, undefined);

  ok(t, await s.cni('GC', '', undefined, { extra: { name: 'rtcnet', 'cni.dev/valid-attachments': [] } }), 'GC of rtcnet');
  t.like(await leaseOf(s, 'k8s/web/on-rtc'), { state: 'held' }, "rtcnet's stale attachment is released");
  t.like(await leaseOf(s, 'k8s/web/on-berth'), { state: 'bound', binding: { containerId: 'on-berth' } }, "berth-net's is not rtcnet's to judge");
  t.like(await leaseOf(s, 'k8s/web/old-live'), { state: 'bound' }, 'no recorded network, veth in place: kept');
  t.like(await leaseOf(s, 'k8s/web/old-gone'), { state: 'held' }, 'no recorded network, no veth: released');
  t.regex(linkState(s.host, vethNameFor('on-berth', 'eth0')), /master berth0 .*state UP/);
  t.regex(linkState(s.host, vethNameFor('old-live', 'eth0')), /master berth0 .*state UP/);
  await eventually(() => {
    if (nsTry(s.host, 'ip', 'link', 'show', vethNameFor('on-rtc', 'eth0'))) throw new Error("rtcnet's veth is still there");
  }, { what: "the released attachment's veth deleted" });
  t.regex(hostRoutes(s), new RegExp(`^${re(addressOf(onBerth))} dev berth0`, 'm'));
  ok(t, await s.cni('CHECK', 'on-berth', a, { extra: { prevResult: onBerth.json } }), 'the berth-net pod is whole');
});

test('a second interface of a container is refused (125) and changes nothing; its DEL leaves the first interface whole', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const add = await s.cni('ADD', 'two', pod);
  ok(t, add, 'ADD eth0');
  const ip = addressOf(add);
  for (const extra of [{}, { name: 'rtcnet' }]) {
    const what = extra.name ?? 'the same network';
    const r = await s.cni('ADD', 'two', pod, { ifName: 'net1', extra });
    t.is(r.code, 1, `${what}: ${r.stdout}`);
    t.is(r.json?.code, 125, r.stdout);
    t.regex(r.json.details, new RegExp(`holds ${re(ip)} through interface eth0 \\(network berth-net\\) of container two; interface net1`));
    t.false(nsTry(pod, 'ip', 'link', 'show', 'net1'), `${what}: no net1 left in the pod`);
    t.false(nsTry(s.host, 'ip', 'link', 'show', vethNameFor('two', 'net1')), `${what}: no net1 veth left on the host`);

    ok(t, await s.cni('DEL', 'two', pod, { ifName: 'net1', extra }), `${what}: DEL net1`);
    t.like(await leaseOf(s, 'k8s/web/two'), { ip, state: 'bound', binding: { containerId: 'two', ifName: 'eth0', network: 'berth-net' } });
    t.regex(nsExec(pod, 'ip', 'route', 'show', 'default'), new RegExp(`default via ${re(s.gateway)} dev eth0 .*onlink`));
    t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'eth0'), new RegExp(`inet ${re(ip)}/32`));
    t.regex(linkState(s.host, vethNameFor('two', 'eth0')), /master berth0 .*state UP/);
    t.regex(hostRoutes(s), new RegExp(`^${re(ip)} dev berth0`, 'm'));
    ok(t, await s.cni('CHECK', 'two', pod, { extra: { prevResult: add.json } }), `${what}: CHECK eth0 after DEL net1`);
  }
  ok(t, await s.cni('DEL', 'two', pod), 'DEL eth0');
  t.like(await leaseOf(s, 'k8s/web/two'), { state: 'held' }, 'the owning interface releases it');
});

test("ADD naming a pool this host's agent does not serve is 7, names both pools, and changes nothing", async (t) => {
  const s = await site(t);
  const other = `p-${randomTag()}`;
  await admin.createPool({ name: other, cidr: '198.18.9.0/24', gateway: '198.18.9.1' });
  const pod = s.lab.pod('pod');
  const r = await s.cni('ADD', 'elsewhere', pod, { extra: { pool: other } });
  t.is(r.code, 1, r.stdout);
  t.is(r.json?.code, 7, r.stdout);
  t.is(r.json.details, `InvalidConfig: pool ${other} in the network config; this host's agent serves pool ${s.pool}`);
  t.deepEqual((await admin.leases({ pool: other })).leases, [], 'nothing bound in the named pool');
  t.deepEqual((await admin.leases({ pool: s.pool })).leases, [], 'nor in the served one');
  t.false(nsTry(pod, 'ip', 'link', 'show', 'eth0'), 'no interface in the pod');
  t.notRegex(hostVeths(s), /bth/);
  ok(t, await s.cni('DEL', 'elsewhere', pod, { extra: { pool: other } }), 'its DEL succeeds');
});

test('a second interface with its own identity gets its own lease and routes only the pool, never the default route; DEL of either leaves the other whole', async (t) => {
  const s = await site(t);
  const pod = s.lab.pod('pod');
  const args = 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=multi';
  const eth0 = await s.cni('ADD', 'multi', pod, { args });
  ok(t, eth0, 'ADD eth0');
  const net1 = await s.cni('ADD', 'multi', pod, { args: `${args};BERTH_IDENTITY=web/multi/net1`, ifName: 'net1' });
  ok(t, net1, 'ADD net1 with its own identity');
  const [ip0, ip1] = [addressOf(eth0), addressOf(net1)];
  t.not(ip0, ip1);
  t.like(await leaseOf(s, 'web/multi/net1'), { ip: ip1, state: 'bound', binding: { containerId: 'multi', ifName: 'net1' } });
  t.deepEqual(net1.json.routes, [{ dst: s.cidr, gw: s.gateway }], 'the result reports the route it made');
  t.regex(nsExec(pod, 'ip', 'route', 'show', 'default'), new RegExp(`^default via ${re(s.gateway)} dev eth0 .*onlink\\s*$`), 'the default route stays on eth0');
  t.regex(nsExec(pod, 'ip', 'route', 'show', s.cidr), new RegExp(`via ${re(s.gateway)} dev net1 .*onlink`));
  ok(t, await s.cni('CHECK', 'multi', pod, { args: `${args};BERTH_IDENTITY=web/multi/net1`, ifName: 'net1', extra: { prevResult: net1.json } }), 'CHECK net1');
  const again = await s.cni('ADD', 'multi', pod, { args: `${args};BERTH_IDENTITY=web/multi/net1`, ifName: 'net1' });
  t.deepEqual(again.json, net1.json, 'a repeated ADD of net1 gives the same result');

  ok(t, await s.cni('DEL', 'multi', pod, { args: `${args};BERTH_IDENTITY=web/multi/net1`, ifName: 'net1' }), 'DEL net1');
  t.like(await leaseOf(s, 'k8s/web/multi'), { ip: ip0, state: 'bound', binding: { ifName: 'eth0' } });
  t.regex(nsExec(pod, 'ip', 'route', 'show', 'default'), new RegExp(`default via ${re(s.gateway)} dev eth0`));
  ok(t, await s.cni('CHECK', 'multi', pod, { args, extra: { prevResult: eth0.json } }), 'CHECK eth0 after DEL net1');

  ok(t, await s.cni('ADD', 'multi', pod, { args: `${args};BERTH_IDENTITY=web/multi/net1`, ifName: 'net1' }), 'ADD net1 again');
  ok(t, await s.cni('DEL', 'multi', pod, { args }), 'DEL eth0');
  t.like(await leaseOf(s, 'web/multi/net1'), { ip: ip1, state: 'bound', binding: { ifName: 'net1' } });
  t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'net1'), new RegExp(`inet ${re(ip1)}/32`));
  t.regex(linkState(s.host, vethNameFor('multi', 'net1')), /master berth0 .*state UP/);
  t.regex(hostRoutes(s), new RegExp(`^${re(ip1)} dev berth0`, 'm'));
});

test('the pod annotation berth.io/ip asks for an address on ADD; a bad one is 7 and changes nothing; DEL ignores it', async (t) => {
  const s = await site(t);
  const want = addressAt(parseCidr(s.cidr), 77n);
  const annotated = (v: unknown) => ({ runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'berth.io/ip': v, 'other.io/x': 'y' } } });
  const pod = s.lab.pod('ann');
  const bad = await s.cni('ADD', 'ann-bad', pod, { extra: annotated('not-an-ip') });
  t.is(bad.json?.code, 7, bad.stdout);
  t.regex(bad.json.details, /pod annotation berth\.io\/ip: not an IPv4 address/);
  t.falsy(await leaseOf(s, 'k8s/web/ann-bad'));
  t.false(nsTry(pod, 'ip', 'link', 'show', 'eth0'), 'nothing plumbed');

  const add = await s.cni('ADD', 'ann', pod, { extra: annotated(want) });
  ok(t, add, 'ADD with the annotation');
  t.is(addressOf(add), want);
  t.like(await leaseOf(s, 'k8s/web/ann'), { ip: want, state: 'bound' });
  ok(t, await s.cni('DEL', 'ann', pod, { extra: annotated('garbage') }), 'DEL with a bad annotation');
  t.like(await leaseOf(s, 'k8s/web/ann'), { ip: want, state: 'held' });
});
