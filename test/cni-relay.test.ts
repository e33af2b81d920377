/**
 * The `berth` relay binary (cni/relay) itself, against a fake agent that runs
 * the real CNI contract (test/doubles/fake-agent.ts): it is static and needs
 * no Node; the pod netns reaches the agent as the runtime sees it (SCM_RIGHTS),
 * and what is not a pod's network namespace is refused with 4; its bounds
 * (stdin cap, connect and answer timeouts, bad answers); and the dispatcher's
 * fuzz findings (issue 9), each through the binary.
 */
import test from 'ava';
import { relayScratch } from './harness/relay-scratch';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { journalId, readDelJournal } from '../common/del-journal';
import { RELAY_ACK } from '../common/relay-protocol';
import { startFakeAgent, type FakeAgent } from './doubles/fake-agent';
import { BIN, execPlugin, execWithStdin } from '../sim/exec';

const fx = relayScratch(test, 'relay');

const RESULT = { cniVersion: '1.1.0', interfaces: [{ name: 'eth0', sandbox: 'x' }], ips: [{ address: '198.18.0.5/32', gateway: '198.18.0.1', interface: 0 }] };

async function agentFor(t: { teardown(fn: () => Promise<void>): void }): Promise<FakeAgent> {
  const a = await startFakeAgent((req) => (req.verb === 'ADD' ? { ok: true, result: RESULT } : { ok: true }));
  t.teardown(() => a.close());
  return a;
}

const conf = (a: { socketPath: string } | string, extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0', name: 'n', type: 'berth', pool: 'p', agentSocket: typeof a === 'string' ? a : a.socketPath, journalDir: join(fx.scratch, 'journal'), ...extra,
});
const env = (verb: string, extra: Record<string, string | undefined> = {}) => ({ CNI_COMMAND: verb, CNI_CONTAINERID: 'c1', CNI_NETNS: fx.netns, CNI_IFNAME: 'eth0', ...extra });

test('the relay is a static executable and runs with no node on PATH', async (t) => {
  t.regex(execFileSync('sh', ['-c', `ldd ${BIN} 2>&1 || true`]).toString(), /not a dynamic executable/);
  const a = await agentFor(t);
  for (const PATH of ['/nonexistent']) {
    const v = await execWithStdin(BIN, [], { PATH, CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    t.is(v.code, 0);
    t.is(v.json.cniVersion, '1.0.0');
    const add = await execWithStdin(BIN, [], { PATH, ...env('ADD') }, JSON.stringify(conf(a)));
    t.is(add.code, 0, add.stdout + add.stderr);
    t.deepEqual(add.json.ips, [{ address: '198.18.0.5/32', gateway: '198.18.0.1', interface: 0 }]);
  }
});

test('the namespace reaches the agent as the runtime sees it, from a mount namespace the agent does not share', async (t) => {
  const a = await agentFor(t);
  // In the agent's (this process's) mount namespace the path is an empty file;
  // only the "runtime", in a private mount namespace, has the netns bound there.
  const dir = join(fx.scratch, 'runtime-view');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'pod-ns');
  writeFileSync(path, '');
  const script = 'mount --bind "$1" "$2" && exec "$0"';
  const viaRuntime = await execWithStdin('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, BIN, fx.netns, path],
    { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env('ADD', { CNI_NETNS: path }) }, JSON.stringify(conf(a)));
  t.is(viaRuntime.code, 0, viaRuntime.stdout + viaRuntime.stderr);
  t.is(a.requests.length, 1);
  t.is(a.requests[0].netns, path, 'the request names the namespace by the runtime\'s path');
  // The same path, seen from the agent's mount namespace, is no namespace at all.
  const direct = await execPlugin(env('ADD', { CNI_NETNS: path }), conf(a));
  t.is(direct.json?.code, 4, direct.stdout);
  t.regex(direct.json.details, /not a network namespace/);
  t.is(a.requests.length, 1);
});

test('what is not a pod network namespace is 4 and never reaches a handler', async (t) => {
  const a = await agentFor(t);
  const file = join(fx.scratch, 'plain-file');
  writeFileSync(file, '');
  const fifo = join(fx.scratch, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const cases: [string, RegExp][] = [
    [file, /not a network namespace/],
    [fx.scratch, /not a network namespace/],
    [fifo, /not a network namespace/],
    ['/proc/self/ns/mnt', /not a network namespace/],
    ['/dev/null', /not a network namespace/],
    ['/proc/self/ns/net', /own network namespace|host's network namespace/],
    [join(fx.scratch, 'missing'), /no network namespace/],
  ];
  for (const [path, why] of cases) {
    for (const verb of ['ADD', 'CHECK']) {
      const r = await execPlugin(env(verb, { CNI_NETNS: path }), conf(a, verb === 'CHECK' ? { prevResult: RESULT } : {}));
      t.is(r.code, 1, `${verb} ${path}`);
      t.is(r.json?.code, 4, `${verb} ${path}: ${r.stdout}`);
      t.regex(r.json.details, why, path);
    }
  }
  t.deepEqual(a.requests, []);
});

test('stdin past the cap is one clear error', async (t) => {
  const a = await agentFor(t);
  const big = JSON.stringify(conf(a, { args: { pad: 'x'.repeat(33 << 20) } }));
  const r = await execPlugin(env('ADD'), big);
  t.is(r.code, 1);
  t.is(r.json?.code, 6);
  t.regex(r.json.details, /more than 33554432 bytes on stdin/);
  t.deepEqual(a.requests, []);
});

test('an agent that never acknowledges (wedged): ADD gets 11 after agentAcceptTimeoutMs, DEL is journalled', async (t) => {
  const held: Socket[] = [];
  const path = join(fx.scratch, 'silent.sock');
  const silent = createServer((s) => void held.push(s));
  await new Promise<void>((res) => silent.listen(path, res));
  t.teardown(() => { held.forEach((s) => s.destroy()); silent.close(); });
  const journalDir = join(fx.scratch, 'journal-silent');
  // agentTimeoutMs is far longer: only the missing acknowledgement can end these.
  const c = conf(path, { agentAcceptTimeoutMs: 200, agentTimeoutMs: 600_000, journalDir });
  const add = await execPlugin(env('ADD'), c);
  t.is(add.json?.code, 11);
  t.regex(add.json.details, /no acknowledgement within 200 ms/);
  const del = await execPlugin(env('DEL', { CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b' }), c);
  t.is(del.code, 0, del.stdout);
  t.regex(del.stderr, /no acknowledgement within 200 ms/);
  const { entries } = await readDelJournal(journalDir);
  t.is(entries.length, 1);
  // The relay (C) and the agent (TypeScript) name an attachment's entry alike.
  t.is(entries[0].id, journalId(entries[0].request));
  t.deepEqual(entries[0].request, { verb: 'DEL', containerId: 'c1', netns: fx.netns, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'a', K8S_POD_NAME: 'b' }, network: 'n', pool: 'p' });
});

test('an agent that acknowledges and then never answers: 11 after agentTimeoutMs', async (t) => {
  const held: Socket[] = [];
  const path = join(fx.scratch, 'acks-only.sock');
  const mute = createServer((s) => { held.push(s); s.on('error', () => undefined); s.write(RELAY_ACK); });
  await new Promise<void>((res) => mute.listen(path, res));
  t.teardown(() => { held.forEach((s) => s.destroy()); mute.close(); });
  const add = await execPlugin(env('ADD'), conf(path, { agentAcceptTimeoutMs: 60_000, agentTimeoutMs: 200 }));
  t.is(add.json?.code, 11);
  t.regex(add.json.details, /no answer within 200 ms/);
});

test('a slow agent that acknowledged gets agentTimeoutMs for its answer, well past agentAcceptTimeoutMs', async (t) => {
  const a = await agentFor(t);
  // The fake agent shares this process's event loop with the test: its acknowledgement may
  // lag by a GC pause or a loaded machine, so the accept bound is generous; the answer comes
  // twice that late, so only agentTimeoutMs can let this ADD succeed.
  a.answerDelayMs = 4_000;
  const add = await execPlugin(env('ADD'), conf(a, { agentAcceptTimeoutMs: 2_000, agentTimeoutMs: 60_000 }));
  t.is(add.code, 0, add.stdout + add.stderr);
  t.deepEqual(add.json.ips, RESULT.ips);
  t.is(a.requests.length, 1);
});

test('an agent that refuses a request at once, without an acknowledgement, is heard', async (t) => {
  const path = join(fx.scratch, 'refuses.sock');
  const answer = JSON.stringify({ code: 1, out: '{"cniVersion":"1.0.0","code":7,"msg":"no","details":"refused"}\n', err: '' });
  const refuser = createServer((s) => { s.on('error', () => undefined); s.end(answer); });
  await new Promise<void>((res) => refuser.listen(path, res));
  t.teardown(() => void refuser.close());
  const r = await execPlugin(env('ADD'), conf(path));
  t.is(r.code, 1);
  t.is(r.json?.code, 7, r.stdout);
  t.is(r.json?.details, 'refused');
});

test('an answer that is not a relay answer counts as no answer', async (t) => {
  const path = join(fx.scratch, 'garbage.sock');
  const bad = createServer((s) => { s.on('error', () => undefined); s.end('{"code": "zero"}'); });
  await new Promise<void>((res) => bad.listen(path, res));
  t.teardown(() => void bad.close());
  const r = await execPlugin(env('ADD'), conf(path));
  t.is(r.json?.code, 11);
  t.regex(r.json.details, /not a relay answer/);
  const st = await execPlugin({ CNI_COMMAND: 'STATUS' }, conf(path, { cniVersion: '1.1.0' }));
  t.is(st.json?.code, 50);
  t.is(st.json?.cniVersion, '1.1.0');
});

// ---- issue 9's fuzz findings, through the binary ------------------------------

test('deep nesting in a config field is a decode error, not a stack', async (t) => {
  const a = await agentFor(t);
  for (const depth of [65, 5000, 100_000]) {
    const stdin = JSON.stringify(conf(a)).replace(/}$/, `,"args":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    const r = await execPlugin(env('ADD'), stdin);
    t.is(r.json?.code, 6, `${depth}: ${r.stdout}`);
    t.notRegex(r.stdout + r.stderr, /\n\s+at |Maximum call stack/);
  }
  t.deepEqual(a.requests, []);
});

test('container ids past 256 characters are a clear 4', async (t) => {
  const a = await agentFor(t);
  for (const n of [257, 1024, 64 * 1024]) {
    const r = await execPlugin(env('ADD', { CNI_CONTAINERID: 'c'.repeat(n) }), conf(a));
    t.is(r.json?.code, 4, `${n}`);
    t.regex(r.json.details, /CNI_CONTAINERID: container ID of \d+ characters, at most 256/);
  }
  t.is((await execPlugin(env('ADD', { CNI_CONTAINERID: 'c'.repeat(256) }), conf(a))).code, 0);
});

test('interface names and MACs the kernel would refuse are refused up front', async (t) => {
  const a = await agentFor(t);
  for (const ifName of ['ethé', 'é'.repeat(7), 'eth\u00a0', 'eth\x7f']) {
    const r = await execPlugin(env('ADD', { CNI_IFNAME: ifName }), conf(a));
    t.is(r.json?.code, 4, JSON.stringify(ifName));
  }
  for (const mac of ['01:00:5e:00:00:01', '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff']) {
    const viaConf = await execPlugin(env('ADD'), conf(a, { runtimeConfig: { mac } }));
    t.is(viaConf.json?.code, 7, mac);
    const viaArgs = await execPlugin(env('ADD', { CNI_ARGS: `MAC=${mac}` }), conf(a));
    t.is(viaArgs.json?.code, 4, mac);
  }
  t.deepEqual(a.requests, []);
});

test('__proto__ in CNI_ARGS is just an unknown key', async (t) => {
  const a = await agentFor(t);
  const r = await execPlugin(env('ADD', { CNI_ARGS: '__proto__=x' }), conf(a));
  t.is(r.json?.code, 4);
  t.regex(r.json.details, /unknown keys __proto__/);
  const ok = await execPlugin(env('ADD', { CNI_ARGS: 'IgnoreUnknown=1;__proto__=x;K8S_POD_NAME=p' }), conf(a));
  t.is(ok.code, 0, ok.stdout);
  t.deepEqual(Object.keys(a.requests[0].args).sort(), ['IgnoreUnknown', 'K8S_POD_NAME', '__proto__']);
});

test('a 10 MB prevResult does not stop a DEL', async (t) => {
  const a = await agentFor(t);
  const prevResult = { cniVersion: '1.0.0', ips: [{ address: '198.18.0.5/32' }], dns: { search: Array.from({ length: 10_000 }, (_, i) => `${'d'.repeat(1000)}${i}`) } };
  const r = await execPlugin(env('DEL'), conf(a, { prevResult }));
  t.is(r.code, 0, r.stdout);
  t.is(a.requests[0].verb, 'DEL');
});
