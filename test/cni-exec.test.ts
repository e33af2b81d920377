/**
 * The `berth` relay binary, exec'd exactly as a runtime does, against a
 * fake agent on a real unix socket: every supported cniVersion, every verb,
 * a table of bad inputs (each with its CNI code and an untouched agent), and
 * the agent-down behaviour of each verb.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CniResult } from '../common/cni-types';
import { BerthError } from '../common/errors';
import { SUPPORTED_VERSIONS, toVersion, projectToVersion } from '../common/cni-version';
import { readDelJournal } from '../common/del-journal';
import { startFakeAgent, type FakeAgent, type Responder } from './doubles/fake-agent';
import { ensureRelay, execPlugin } from '../sim/exec';

const NETNS_NAME = `berth-cni-exec-${process.pid}`;
let netns = '';
let scratch = '';

test.before(async () => {
  await ensureRelay();
  scratch = mkdtempSync(join(tmpdir(), 'berth-cni-exec-'));
  try {
    execFileSync('ip', ['netns', 'add', NETNS_NAME], { stdio: 'ignore' });
    netns = `/run/netns/${NETNS_NAME}`;
  } catch {
    // Without root, a plain file stands in: the plugin only checks that CNI_NETNS exists.
    netns = join(scratch, 'fake-netns');
    writeFileSync(netns, '');
  }
});

test.after.always(() => {
  if (netns.startsWith('/run/netns/')) {
    try {
      execFileSync('ip', ['netns', 'del', NETNS_NAME], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const canned: CniResult = {
  interfaces: [{ name: 'eth0', mac: '02:42:c6:12:00:05', mtu: 1450, sandbox: '/run/netns/pod' }],
  ips: [{ address: '198.18.0.5/16', gateway: '198.18.0.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0', gw: '198.18.0.1' }],
};

async function agentFor(t: { teardown(fn: () => Promise<void>): void }, respond?: Responder): Promise<FakeAgent> {
  const a = await startFakeAgent(respond ?? ((req) => (req.verb === 'ADD' ? { ok: true, result: canned } : { ok: true })));
  t.teardown(() => a.close());
  return a;
}

function conf(agent: { socketPath: string } | string, version: string, extra: Record<string, unknown> = {}) {
  return {
    cniVersion: version,
    name: 'berth-net',
    type: 'berth',
    pool: 'default',
    agentSocket: typeof agent === 'string' ? agent : agent.socketPath,
    journalDir: join(scratch, 'journal'),
    ...extra,
  };
}

const attachEnv = (verb: string, extra: Record<string, string | undefined> = {}) => ({
  CNI_COMMAND: verb,
  CNI_CONTAINERID: 'c0ffee01',
  CNI_NETNS: netns,
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0',
  CNI_PATH: '/opt/cni/bin',
  ...extra,
});

test('VERSION answers in the version asked, listing all supported versions', async (t) => {
  for (const v of [...SUPPORTED_VERSIONS, '0.1.0']) {
    const r = await execPlugin({ CNI_COMMAND: 'VERSION' }, { cniVersion: v });
    t.is(r.code, 0);
    t.deepEqual(r.json, { cniVersion: v === '0.1.0' ? '1.1.0' : v, supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  }
  const empty = await execPlugin({ CNI_COMMAND: 'VERSION' }, '');
  t.is(empty.code, 0);
  t.is(empty.json.cniVersion, '1.1.0');
});

for (const v of SUPPORTED_VERSIONS) {
  test(`ADD, CHECK, DEL round trip at cniVersion ${v}`, async (t) => {
    const agent = await agentFor(t);
    const add = await execPlugin(attachEnv('ADD'), conf(agent, v, { runtimeConfig: { ips: ['198.18.0.5/16'], mac: '02:42:C6:12:00:05' }, mtu: 1450 }));
    t.is(add.code, 0, add.stdout + add.stderr);
    t.deepEqual(add.json, toVersion(canned, v));
    t.is(add.stdout.trim().split('\n').length, 1);
    t.like(agent.requests[0], {
      verb: 'ADD', containerId: 'c0ffee01', netns, ifName: 'eth0', pool: 'default', ips: ['198.18.0.5'], mac: '02:42:c6:12:00:05',
      args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'web-0' },
    });
    t.is((agent.requests[0] as { mtu?: number }).mtu, 1450);

    const check = await execPlugin(attachEnv('CHECK'), conf(agent, v, { prevResult: add.json }));
    if (v === '0.3.0' || v === '0.3.1') {
      t.is(check.code, 1);
      t.is(check.json.code, 1, 'CHECK needs cniVersion >= 0.4.0');
      t.is(agent.requests.length, 1);
    } else {
      t.is(check.code, 0, check.stdout);
      t.is(check.stdout, '');
      t.deepEqual(agent.requests[1].prevResult, projectToVersion(canned, v));
    }

    const del = await execPlugin(attachEnv('DEL'), conf(agent, v, { prevResult: add.json }));
    t.is(del.code, 0, del.stdout);
    t.is(del.stdout, '');
    const last = agent.requests[agent.requests.length - 1];
    t.is(last.verb, 'DEL');
    t.deepEqual(last.prevResult, projectToVersion(canned, v));
  });
}

test('DEL with an empty CNI_NETNS and no prevResult still reaches the agent', async (t) => {
  const agent = await agentFor(t);
  const r = await execPlugin(attachEnv('DEL', { CNI_NETNS: undefined, CNI_ARGS: undefined, CNI_PATH: undefined }), conf(agent, '1.1.0'));
  t.is(r.code, 0, r.stdout);
  t.like(agent.requests[0], { verb: 'DEL', netns: '', containerId: 'c0ffee01', ifName: 'eth0', args: {} });
  t.false('prevResult' in agent.requests[0]);
});

test('GC forwards the valid attachments; STATUS forwards; both need 1.1.0', async (t) => {
  const agent = await agentFor(t);
  const gc = await execPlugin({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf(agent, '1.1.0', {
    'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }, { containerID: 'c2', ifname: 'net1' }],
    'cni.dev/attachments': [{ containerID: 'c1', ifname: 'eth0' }, { containerID: 'c2', ifname: 'net1' }],
  }));
  t.is(gc.code, 0, gc.stdout);
  t.is(gc.stdout, '');
  t.deepEqual(agent.requests[0].validAttachments, [{ containerId: 'c1', ifName: 'eth0' }, { containerId: 'c2', ifName: 'net1' }]);
  t.is(agent.requests[0].verb, 'GC');

  const st = await execPlugin({ CNI_COMMAND: 'STATUS' }, conf(agent, '1.1.0'));
  t.is(st.code, 0, st.stdout);
  t.is(st.stdout, '');
  t.is(agent.requests[1].verb, 'STATUS');

  for (const verb of ['GC', 'STATUS']) {
    const old = await execPlugin({ CNI_COMMAND: verb }, conf(agent, '1.0.0', { 'cni.dev/valid-attachments': [] }));
    t.is(old.json?.code, 1, `${verb} at 1.0.0`);
  }
  t.is(agent.requests.length, 2);
});

// ---- bad inputs: code, and nothing reaches the agent --------------------------

interface BadCase {
  name: string;
  env: () => Record<string, string | undefined>;
  stdin: (a: FakeAgent) => string | object;
  code: number;
  msg?: RegExp;
}

const good = (a: FakeAgent) => conf(a, '1.0.0');
const BAD: BadCase[] = [
  { name: 'malformed JSON', env: () => attachEnv('ADD'), stdin: () => '{"cniVersion": "1.0.0",', code: 6 },
  { name: 'JSON that is not an object', env: () => attachEnv('ADD'), stdin: () => '[1,2]', code: 6 },
  { name: 'empty stdin', env: () => attachEnv('ADD'), stdin: () => '', code: 6 },
  { name: 'missing CNI_COMMAND', env: () => attachEnv('ADD', { CNI_COMMAND: undefined }), stdin: good, code: 4, msg: /CNI_COMMAND/ },
  { name: 'unknown CNI_COMMAND', env: () => attachEnv('FROB'), stdin: good, code: 4, msg: /CNI_COMMAND/ },
  { name: 'missing CNI_CONTAINERID', env: () => attachEnv('ADD', { CNI_CONTAINERID: undefined }), stdin: good, code: 4, msg: /CNI_CONTAINERID/ },
  { name: 'missing CNI_NETNS on ADD', env: () => attachEnv('ADD', { CNI_NETNS: '' }), stdin: good, code: 4, msg: /CNI_NETNS/ },
  { name: 'missing CNI_NETNS on CHECK', env: () => attachEnv('CHECK', { CNI_NETNS: undefined }), stdin: (a) => conf(a, '1.0.0', { prevResult: {} }), code: 4, msg: /CNI_NETNS/ },
  { name: 'missing CNI_IFNAME on DEL', env: () => attachEnv('DEL', { CNI_IFNAME: undefined }), stdin: good, code: 4, msg: /CNI_IFNAME/ },
  { name: 'invalid container id', env: () => attachEnv('ADD', { CNI_CONTAINERID: '-bad id' }), stdin: good, code: 4, msg: /CNI_CONTAINERID/ },
  { name: 'ifname of 16 characters', env: () => attachEnv('ADD', { CNI_IFNAME: 'a234567890123456' }), stdin: good, code: 4, msg: /CNI_IFNAME/ },
  { name: 'ifname with /', env: () => attachEnv('ADD', { CNI_IFNAME: 'eth/0' }), stdin: good, code: 4 },
  { name: 'ifname with :', env: () => attachEnv('ADD', { CNI_IFNAME: 'eth:0' }), stdin: good, code: 4 },
  { name: 'ifname with space', env: () => attachEnv('ADD', { CNI_IFNAME: 'eth 0' }), stdin: good, code: 4 },
  { name: 'ifname .', env: () => attachEnv('ADD', { CNI_IFNAME: '.' }), stdin: good, code: 4 },
  { name: 'ifname ..', env: () => attachEnv('DEL', { CNI_IFNAME: '..' }), stdin: good, code: 4 },
  { name: 'non-existent netns', env: () => attachEnv('ADD', { CNI_NETNS: '/run/netns/berth-does-not-exist' }), stdin: good, code: 4, msg: /CNI_NETNS/ },
  { name: 'malformed CNI_ARGS', env: () => attachEnv('ADD', { CNI_ARGS: 'K8S_POD_NAME' }), stdin: good, code: 4, msg: /CNI_ARGS/ },
  { name: 'unknown CNI_ARGS key without IgnoreUnknown', env: () => attachEnv('ADD', { CNI_ARGS: 'FOO=bar' }), stdin: good, code: 4, msg: /CNI_ARGS/ },
  { name: 'unsupported cniVersion', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '0.2.0'), code: 1 },
  { name: 'absent cniVersion', env: () => attachEnv('ADD'), stdin: (a) => ({ ...conf(a, '1.0.0'), cniVersion: undefined }), code: 1 },
  { name: 'future cniVersion', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '9.9.9'), code: 1 },
  { name: 'CHECK at 0.3.1', env: () => attachEnv('CHECK'), stdin: (a) => conf(a, '0.3.1', { prevResult: {} }), code: 1 },
  { name: 'unknown config field', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { bridge: 'cni0' }), code: 2, msg: /bridge.*cni0/ },
  { name: 'ipam section', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { ipam: { type: 'host-local' } }), code: 2, msg: /ipam/ },
  { name: 'missing name', env: () => attachEnv('ADD'), stdin: (a) => ({ ...conf(a, '1.0.0'), name: undefined }), code: 7 },
  { name: 'wrong type', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { type: 'bridge' }), code: 7 },
  { name: 'missing pool', env: () => attachEnv('ADD'), stdin: (a) => ({ ...conf(a, '1.0.0'), pool: undefined }), code: 7 },
  { name: 'bad mtu', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { mtu: 'big' }), code: 7 },
  { name: 'bad runtimeConfig.ips', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { runtimeConfig: { ips: ['not-an-ip'] } }), code: 7 },
  { name: 'prevResult on ADD (berth must be first)', env: () => attachEnv('ADD'), stdin: (a) => conf(a, '1.0.0', { prevResult: toVersion(canned, '1.0.0') }), code: 7 },
  { name: 'CHECK without prevResult', env: () => attachEnv('CHECK'), stdin: good, code: 7 },
  { name: 'CHECK with malformed prevResult', env: () => attachEnv('CHECK'), stdin: (a) => conf(a, '1.0.0', { prevResult: { ips: [{ address: 'x' }] } }), code: 6 },
  { name: 'GC without valid attachments', env: () => ({ CNI_COMMAND: 'GC' }), stdin: (a) => conf(a, '1.1.0'), code: 7 },
];

for (const c of BAD) {
  test(`bad input → code ${c.code}: ${c.name}`, async (t) => {
    const agent = await agentFor(t);
    const raw = c.stdin(agent);
    const r = await execPlugin(c.env(), typeof raw === 'string' ? raw : JSON.parse(JSON.stringify(raw)));
    t.is(r.code, 1, r.stdout + r.stderr);
    t.is(r.json?.code, c.code, r.stdout);
    t.is(typeof r.json?.msg, 'string');
    t.is(typeof r.json?.cniVersion, 'string');
    if (c.msg) t.regex(`${r.json?.msg} ${r.json?.details}`, c.msg);
    t.deepEqual(agent.requests, [], 'the agent must receive nothing');
    t.notRegex(r.stderr + r.stdout, /\n\s+at /, 'no stack trace for user errors');
  });
}

// ---- agent errors and agent down -------------------------------------------

test('agent errors pass through with Berth codes; retryable kinds become 11', async (t) => {
  const body = (kind: 'PoolExhausted' | 'LeaseHeldElsewhere' | 'PluginLimited', details: string) => new BerthError(kind, details).toBody();
  let next = body('PoolExhausted', 'pool default: 0 of 254 free');
  const agent = await agentFor(t, () => ({ ok: false, error: next }));
  const r1 = await execPlugin(attachEnv('ADD'), conf(agent, '0.4.0'));
  t.is(r1.code, 1);
  t.deepEqual(r1.json, { cniVersion: '0.4.0', code: 101, msg: 'pool exhausted', details: 'PoolExhausted: pool default: 0 of 254 free' });

  next = body('LeaseHeldElsewhere', 'identity shop/web-0 on host b');
  const r2 = await execPlugin(attachEnv('ADD'), conf(agent, '1.1.0'));
  t.is(r2.json.code, 11);
  t.regex(r2.json.details, /^LeaseHeldElsewhere: /);

  next = body('PluginLimited', 'vxlan down');
  const r3 = await execPlugin({ CNI_COMMAND: 'STATUS' }, conf(agent, '1.1.0'));
  t.is(r3.json.code, 51);
  t.is(agent.requests.length, 3);
});

test('agent down: ADD/CHECK/GC answer 11, STATUS 50, DEL journals and succeeds', async (t) => {
  const gone = join(scratch, 'no-agent.sock');
  const journalDir = join(scratch, 'journal-down');
  const c = (v: string, extra: Record<string, unknown> = {}) => conf(gone, v, { journalDir, ...extra });

  const add = await execPlugin(attachEnv('ADD'), c('1.0.0'));
  t.is(add.json?.code, 11, add.stdout);
  // What kubelet logs (via containerd) names the cause: the agent, unavailable, and where it was looked for.
  t.is(add.json?.details, `TryAgainLater: agent unavailable at ${gone}: ENOENT`);
  const check = await execPlugin(attachEnv('CHECK'), c('1.0.0', { prevResult: toVersion(canned, '1.0.0') }));
  t.is(check.json?.code, 11);
  const gc = await execPlugin({ CNI_COMMAND: 'GC' }, c('1.1.0', { 'cni.dev/valid-attachments': [] }));
  t.is(gc.json?.code, 11);
  const st = await execPlugin({ CNI_COMMAND: 'STATUS' }, c('1.1.0'));
  t.is(st.json?.code, 50);
  t.is(st.json?.msg, 'plugin not available');

  const del = await execPlugin(attachEnv('DEL', { CNI_NETNS: '' }), c('0.3.1', { prevResult: toVersion(canned, '0.3.1') }));
  t.is(del.code, 0, del.stdout + del.stderr);
  t.is(del.stdout, '');
  const { entries } = await readDelJournal(journalDir);
  t.is(entries.length, 1);
  t.like(entries[0].request, { verb: 'DEL', containerId: 'c0ffee01', ifName: 'eth0', pool: 'default', netns: '', network: 'berth-net' });
  t.deepEqual(entries[0].request.args, { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'web-0' });
  // The relay journals what DEL needs (identity), not the cached result: DEL cleans up without it.
  t.false('prevResult' in entries[0].request);
});

test('agent that hangs up without answering counts as down', async (t) => {
  const agent = await agentFor(t, () => 'close');
  const journalDir = join(scratch, 'journal-hangup');
  const add = await execPlugin(attachEnv('ADD'), conf(agent, '1.0.0'));
  t.is(add.json?.code, 11);
  const del = await execPlugin(attachEnv('DEL'), conf(agent, '1.0.0', { journalDir }));
  t.is(del.code, 0);
  t.is((await readDelJournal(journalDir)).entries.length, 1);
  t.is(agent.requests.length, 2);
});

test('an invalid result from the agent is an internal error, not garbage on stdout', async (t) => {
  const agent = await agentFor(t, () => ({ ok: true, result: { ips: [{ address: 'nonsense' }] } as CniResult }));
  const r = await execPlugin(attachEnv('ADD'), conf(agent, '1.0.0'));
  t.is(r.code, 1);
  t.is(r.json?.code, 110);
});
