/**
 * berth-agent start-up while etcd can't be used: nothing listening, a wrong
 * CA, no client certificate. By default the agent keeps retrying and logs
 * why; with --etcd-wait it exits non-zero with one clear line. A real etcd
 * with TLS and client-certificate auth (sim/etcd.ts { tls: true }), the
 * agent in a simulated host's namespace, reaching etcd over its unix socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { AGENT_MAIN } from '../sim/cluster';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { Lab, type SimHost } from '../sim/netns';

let etcd: EtcdServer;
let lab: Lab;
let host: SimHost;
let dir: string;
const children = new Set<ChildProcess>();

test.before(async () => {
  etcd = await startEtcd({ tls: true });
  lab = new Lab();
  host = lab.host('start');
  dir = fs.mkdtempSync(path.join(tmpdir(), 'berth-agent-start-'));
});
test.after.always(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  lab?.teardown();
  await etcd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  stderr(): string;
  logs(): Record<string, unknown>[];
  exit: Promise<number | null>;
}

let seq = 0;
function runAgent(etcdArgs: string[], extra: string[] = []): Run {
  const n = seq++;
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  // Same PID as the agent: `ip netns exec` execs node in place.
  const child = spawn('ip', [
    'netns', 'exec', host.name, process.execPath, AGENT_MAIN, ...etcdArgs,
    '--host', `start-${n}`, '--underlay-ip', host.underlayIp, '--socket', path.join(dir, `a${n}.sock`),
    '--journal-dir', path.join(dir, `j${n}`), '--controller', `unix://${path.join(dir, 'no-controller.sock')}`,
    '--metrics-listen', `unix://${path.join(dir, `m${n}.sock`)}`, ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'], env });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const logs = () => err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { child, stderr: () => err, logs, exit };
}

const tls = () => ['--etcd-endpoints', etcd.socketEndpoint, '--etcd-ca', etcd.tls!.ca, '--etcd-cert', etcd.tls!.cert, '--etcd-key', etcd.tls!.key];
const wrongCa = () => ['--etcd-endpoints', etcd.socketEndpoint, '--etcd-ca', etcd.tls!.otherCa, '--etcd-cert', etcd.tls!.cert, '--etcd-key', etcd.tls!.key];
const noClientCert = () => ['--etcd-endpoints', etcd.socketEndpoint, '--etcd-ca', etcd.tls!.ca];
const nothingListening = () => ['--etcd-endpoints', `unix://${path.join(dir, 'nobody.sock')}`];

/** Ends an agent still running and returns its exit status (a clean stop is 0). */
async function stop(r: Run): Promise<number | null> {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGTERM');
  return r.exit;
}

test('control: the right CA and client certificate list the cluster', async (t) => {
  const r = runAgent(tls());
  await eventually(() => {
    if (r.child.exitCode !== null) throw new Error(`exited: ${r.stderr()}`);
    if (!r.logs().some((l) => l.msg === 'cluster listed')) throw new Error('not listed yet');
  }, { timeoutMs: 15_000, what: 'agent to list etcd over TLS' });
  t.is(await stop(r), 0);
});

for (const [name, args, cause] of [
  ['nothing listening', nothingListening, /ENOENT|No connection established/],
  ['a wrong CA', wrongCa, /certificate/],
  ['no client certificate', noClientCert, /certificate|alert/],
] as const) {
  test(`${name}: by default the agent keeps retrying and logs why`, async (t) => {
    const r = runAgent(args());
    // Three failed retries (100 + 200 + 400 ms of backoff) with the agent still up;
    // before the fix it exited 0 after the first.
    await eventually(() => {
      if (r.child.exitCode !== null) throw new Error(`agent exited ${r.child.exitCode}: ${r.stderr()}`);
      if (r.logs().filter((l) => l.msg === 'relist failed').length < 3) throw new Error('fewer than 3 retries yet');
    }, { timeoutMs: 20_000, what: 'agent to keep retrying' });
    t.is(r.child.exitCode, null, 'still running');
    const first = r.logs().find((l) => l.msg === 'etcd unreachable, retrying');
    t.regex(String(first?.why), cause);
    t.regex(String(r.logs().filter((l) => l.msg === 'relist failed').pop()?.cause), cause, 'the cause survives the circuit breaker');
    t.is(await stop(r), 0);
  });

  test(`${name}: with --etcd-wait the agent exits 5 with one clear line`, async (t) => {
    const r = runAgent(args(), ['--etcd-wait', '1']);
    const code = await r.exit;
    t.is(code, 5);
    const plain = r.stderr().split('\n').filter((l) => l && !l.startsWith('{') && !l.startsWith('(node') && !/DeprecationWarning/.test(l));
    t.is(plain.length, 1, plain.join('\n'));
    t.regex(plain[0], /^berth-agent: etcd unreachable at start: no answer from etcd within 1 s: /);
    t.regex(plain[0], cause);
  });
}
