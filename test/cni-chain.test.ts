/**
 * Berth's ADD result must be a valid prevResult for the reference plugins.
 * Pipes the relay's output (fake agent behind it) into Debian's
 * /usr/lib/cni/tuning for ADD, CHECK and DEL in a real network namespace.
 * Skips without root, `ip` or the plugins; the lead's chaining tests go further.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { CniResult } from '../common/cni-types';
import { SUPPORTED_VERSIONS, parseResult, projectToVersion, versionAtLeast } from '../common/cni-version';
import { startFakeAgent, type FakeAgent } from './doubles/fake-agent';
import { ensureRelay, execPlugin } from '../sim/exec';

const TUNING = '/usr/lib/cni/tuning';
const NS = `berth-cni-chain-${process.pid}`;
const NETNS = `/run/netns/${NS}`;
let usable = false;
let tuningVersions: string[] = [];
let agent: FakeAgent;

function sh(cmd: string, args: string[]) {
  execFileSync(cmd, args, { stdio: 'ignore' });
}

test.before(async () => {
  await ensureRelay();
  if (process.getuid?.() !== 0 || !existsSync(TUNING)) return;
  try {
    sh('ip', ['netns', 'add', NS]);
    sh('ip', ['-n', NS, 'link', 'add', 'eth0', 'type', 'dummy']);
    sh('ip', ['-n', NS, 'link', 'set', 'eth0', 'up']);
    usable = true;
  } catch {
    return;
  }
  const v = JSON.parse(execFileSync(TUNING, { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}' }).toString()) as { supportedVersions: string[] };
  tuningVersions = v.supportedVersions;
  const result: CniResult = {
    interfaces: [{ name: 'eth0', mac: '02:42:c6:12:00:05', mtu: 1450, sandbox: NETNS }],
    ips: [{ address: '198.18.0.5/16', gateway: '198.18.0.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0', gw: '198.18.0.1' }],
  };
  agent = await startFakeAgent((req) => (req.verb === 'ADD' ? { ok: true, result } : { ok: true }));
});

test.after.always(async () => {
  if (agent) await agent.close();
  try {
    sh('ip', ['netns', 'del', NS]);
  } catch {
    /* never created */
  }
});

function runTuning(verb: string, conf: object): Promise<{ code: number | null; stdout: string }> {
  return new Promise((res, rej) => {
    const child = spawn(TUNING, [], {
      env: { CNI_COMMAND: verb, CNI_CONTAINERID: 'chain01', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
    });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout }));
    child.stdin.on('error', () => undefined); // a plugin may exit before reading it all
    child.stdin.end(JSON.stringify(conf));
  });
}

for (const v of SUPPORTED_VERSIONS) {
  test(`tuning accepts berth's ${v} result as prevResult (ADD, CHECK, DEL)`, async (t) => {
    if (!usable) return t.pass('needs root, ip and /usr/lib/cni/tuning');
    if (!tuningVersions.includes(v)) return t.pass(`installed tuning does not speak ${v}`);
    const add = await execPlugin(
      { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'chain01', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
      { cniVersion: v, name: 'berth-net', type: 'berth', pool: 'default', agentSocket: agent.socketPath },
    );
    t.is(add.code, 0, add.stdout + add.stderr);
    const tuningConf = { cniVersion: v, name: 'berth-net', type: 'tuning', prevResult: add.json };
    const tAdd = await runTuning('ADD', tuningConf);
    t.is(tAdd.code, 0, tAdd.stdout);
    const echoed = parseResult(JSON.parse(tAdd.stdout), v, 'tuning result');
    t.deepEqual(echoed, parseResult(add.json, v));
    t.deepEqual(echoed.ips, projectToVersion(echoed, v).ips);
    if (versionAtLeast(v, '0.4.0')) {
      const tCheck = await runTuning('CHECK', { ...tuningConf, prevResult: JSON.parse(tAdd.stdout) });
      t.is(tCheck.code, 0, tCheck.stdout);
    }
    const tDel = await runTuning('DEL', tuningConf);
    t.is(tDel.code, 0, tDel.stdout);
  });
}
