/**
 * In-process tests of the dispatcher: env, stdin, stdout and the agent
 * transport injected (the skel pattern). Covers what is awkward through a
 * real process: timeouts, a full journal, stdin failures, stack hygiene.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import { ENV_TABLE, ifNameProblem, runPlugin, VERBS, type PluginIO } from './plugin';

interface Run {
  code: number;
  out: string;
  err: string;
  json?: any;
  sent: AgentRequest[];
}

async function run(env: Record<string, string | undefined>, stdin: object | string, send?: (req: AgentRequest) => Promise<AgentResponse>, extra: Partial<PluginIO> = {}): Promise<Run> {
  let out = '';
  let err = '';
  const sent: AgentRequest[] = [];
  const code = await runPlugin({
    env,
    readStdin: async () => (typeof stdin === 'string' ? stdin : JSON.stringify(stdin)),
    stdout: (s) => (out += s),
    stderr: (s) => (err += s),
    netnsProblem: async (p) => (p === '/run/netns/pod' ? undefined : 'no network namespace'),
    send: async (req) => {
      sent.push(req);
      if (!send) return { ok: true };
      return send(req);
    },
    ...extra,
  });
  return { code, out, err, sent, json: out ? JSON.parse(out) : undefined };
}

const env = (verb: string, e: Record<string, string | undefined> = {}) => ({ CNI_COMMAND: verb, CNI_CONTAINERID: 'abc', CNI_NETNS: '/run/netns/pod', CNI_IFNAME: 'eth0', ...e });
const conf = (e: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'n', type: 'berth', pool: 'p', ...e });

test('the env table covers the six variables and every verb needs CNI_COMMAND', (t) => {
  t.deepEqual(Object.keys(ENV_TABLE).sort(), ['CNI_ARGS', 'CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_NETNS', 'CNI_PATH']);
  t.deepEqual([...ENV_TABLE.CNI_COMMAND.requiredFor], [...VERBS]);
  t.deepEqual([...ENV_TABLE.CNI_NETNS.requiredFor], ['ADD', 'CHECK']);
  for (const rule of Object.values(ENV_TABLE)) {
    t.is(rule.missing, 'InvalidEnv');
    t.is(rule.invalid, 'InvalidEnv');
  }
  t.is(ifNameProblem('eth0'), undefined);
  t.is(ifNameProblem('a'.repeat(15)), undefined);
  t.truthy(ifNameProblem('a'.repeat(16)));
  t.truthy(ifNameProblem('a\tb'));
});

test('all missing required variables are named in the message', async (t) => {
  const r = await run({ CNI_COMMAND: 'ADD' }, conf());
  t.is(r.code, 1);
  t.is(r.json.code, 4);
  t.regex(r.json.msg, /CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME/);
  t.deepEqual(r.sent, []);
});

test('unreadable stdin is IO (5)', async (t) => {
  const r = await run(env('ADD'), conf(), undefined, { readStdin: async () => { throw new Error('EIO'); } });
  t.is(r.json.code, 5);
});

test('by default CNI_NETNS must exist and not be a directory', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-plugin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'ns');
  writeFileSync(file, '');
  for (const [path, ok] of [[file, true], [dir, false], [join(dir, 'missing'), false], [join(file, 'below-a-file'), false]] as const) {
    const r = await run(env('ADD', { CNI_NETNS: path }), conf(), async () => ({ ok: true, result: { ips: [{ address: '198.18.0.9/16' }] } }), { netnsProblem: undefined });
    t.is(r.code, ok ? 0 : 1, path);
    if (!ok) t.is(r.json.code, 4, path);
  }
});

test('a DEL with an unparseable prevResult still forwards, without it', async (t) => {
  const r = await run(env('DEL'), conf({ prevResult: { ips: 'nope' } }));
  t.is(r.code, 0);
  t.is(r.sent.length, 1);
  t.false('prevResult' in r.sent[0]);
  t.regex(r.err, /ignoring unparseable prevResult/);
});

test('CNI_ARGS IP/MAC are used when the config requests nothing', async (t) => {
  const r = await run(env('ADD', { CNI_ARGS: 'IP=198.18.0.9;MAC=02-00-00-00-00-09' }), conf(), async () => ({ ok: true, result: { ips: [{ address: '198.18.0.9/16' }] } }));
  t.is(r.code, 0, r.out);
  t.deepEqual(r.sent[0].ips, ['198.18.0.9']);
  t.is(r.sent[0].mac, '02:00:00:00:00:09');
});

test('config dns is filled into an ADD result that has none', async (t) => {
  const r = await run(env('ADD'), conf({ dns: { nameservers: ['198.18.0.1'] } }), async () => ({ ok: true, result: { ips: [{ address: '198.18.0.9/16' }] } }));
  t.deepEqual(r.json, { cniVersion: '1.1.0', ips: [{ address: '198.18.0.9/16' }], dns: { nameservers: ['198.18.0.1'] } });
});

test('a bug is Internal (110) with a stack on stderr only', async (t) => {
  const r = await run(env('ADD'), conf(), async () => { throw new TypeError('boom'); });
  t.is(r.json.code, 110);
  t.regex(r.err, /TypeError|boom/);
  t.regex(r.err, /\n\s+at /);
  t.notRegex(r.out, /\n\s+at /);
});

test('no CNI_COMMAND prints the about text on stderr', async (t) => {
  const r = await run({}, '');
  t.is(r.code, 1);
  t.regex(r.err, /CNI plugin berth v\d/);
  t.regex(r.err, /0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
});


test('a malformed error or result from the handlers is one coded error, never "Internal: {}"', async (t) => {
  for (const resp of [{ ok: false, error: {} }, { ok: false, error: null }, { ok: false, error: 'nope' }] as unknown as AgentResponse[]) {
    const r = await run(env('ADD'), conf(), async () => resp);
    t.is(r.code, 1);
    t.like(r.json, { code: 110, msg: 'malformed error reply' });
    t.regex(r.json.details, /^Internal: not an error body: /);
  }
  const noResult = await run(env('ADD'), conf(), async () => ({ ok: true }));
  t.like(noResult.json, { code: 110 });
  t.regex(noResult.json.details, /without a result/);
});
