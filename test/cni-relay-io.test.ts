/**
 * The relay's I/O on the fds a runtime hands it (cni/relay/io.c): a stdout
 * whose reader is gone (EPIPE, and an ADD whose result was lost is undone),
 * and non-blocking pipes inherited from the runtime (EAGAIN) on stdin and on
 * stdout. FIFOs stand in for the runtime's pipes; CNI_NETNS is a real netns
 * (the agent side checks it is one).
 *
 * Node's spawn makes fds 0-2 of a child blocking, so a non-blocking fd is
 * passed as fd 3 and moved onto stdin/stdout by `sh` (dup2 keeps O_NONBLOCK).
 */
import test from 'ava';
import { relayScratch } from './harness/relay-scratch';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, openSync, read, writeSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeAgent, type FakeAgent } from './doubles/fake-agent';
import { BIN } from '../sim/exec';

const fx = relayScratch(test, 'relay-io');

const RESULT = { cniVersion: '1.1.0', ips: [{ address: '198.18.0.5/32', gateway: '198.18.0.1' }] };

async function agent(t: { teardown(fn: () => Promise<void>): void }): Promise<FakeAgent> {
  const a = await startFakeAgent((req) => (req.verb === 'ADD' ? { ok: true, result: RESULT } : { ok: true }));
  t.teardown(() => a.close());
  return a;
}

function addEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: fx.netns, CNI_IFNAME: 'eth0' };
}

const conf = (a: FakeAgent) => JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'berth', pool: 'p', agentSocket: a.socketPath, journalDir: join(a.dir, 'j') });

function fifo(name: string): string {
  const p = join(fx.scratch, name);
  execFileSync('mkfifo', [p]);
  return p;
}

function collect(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

/** Resolves when `pred` holds, checking every 10 ms; rejects after `ms`. */
async function eventually(pred: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !pred(); ) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a stdout whose reader is gone fails the run without a stack trace', async (t) => {
  const child = spawn(BIN, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'VERSION' }, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout.destroy(); // before the plugin has even started: its write gets EPIPE
  child.stdin.on('error', () => undefined);
  child.stdin.end('{"cniVersion":"1.1.0"}');
  const r = await collect(child);
  t.is(r.code, 1);
  t.regex(r.stderr, /stdout: EPIPE/);
  t.notRegex(r.stderr, /\n\s+at /);
});

test('a non-blocking stdin is read whole, across EAGAIN', async (t) => {
  const a = await agent(t);
  const path = fifo('stdin');
  const rd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const wr = openSync(path, constants.O_WRONLY);
  const text = conf(a);
  // The first half is there at once; with the writer still open, the next read is EAGAIN.
  writeSync(wr, text.slice(0, 40));
  const child = spawn('sh', ['-c', 'exec "$0" 0<&3 3<&-', BIN], { env: addEnv(), stdio: ['ignore', 'pipe', 'pipe', rd] });
  closeSync(rd);
  const done = collect(child);
  await new Promise((r) => setTimeout(r, 200)); // the plugin is waiting on its stdin by now
  writeSync(wr, text.slice(40));
  closeSync(wr);
  const r = await done;
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(a.requests.length, 1);
  t.deepEqual(JSON.parse(r.stdout).ips, RESULT.ips);
});

test('a full non-blocking stdout is retried until the runtime reads, and nothing is lost', async (t) => {
  const a = await agent(t);
  const path = fifo('stdout');
  const rd = openSync(path, constants.O_RDWR); // a blocking reader that never sees EOF
  const wr = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  let filled = 0;
  for (const chunk = Buffer.alloc(4096, 'x'); ; ) {
    try {
      filled += writeSync(wr, chunk);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw e;
    }
  }
  const child = spawn('sh', ['-c', 'exec "$0" 1>&3 3>&-', BIN], { env: addEnv(), stdio: ['pipe', 'ignore', 'pipe', wr] });
  closeSync(wr);
  let exited = false;
  const done = collect(child).finally(() => (exited = true));
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(conf(a));
  await eventually(() => a.requests.length === 1);
  await new Promise((r) => setTimeout(r, 200)); // the plugin has its answer and a full pipe
  t.false(exited, 'the plugin must not exit while its result is unwritten');

  let out = Buffer.alloc(0);
  while (!out.subarray(filled).includes(0x0a)) {
    const buf = Buffer.alloc(65536);
    const n = await new Promise<number>((res, rej) => read(rd, buf, 0, buf.length, null, (e, m) => (e ? rej(e) : res(m))));
    out = Buffer.concat([out, buf.subarray(0, n)]);
  }
  closeSync(rd);
  const r = await done;
  t.is(r.code, 0, r.stderr);
  t.true(out.subarray(0, filled).every((b) => b === 0x78));
  const line = out.subarray(filled).toString('utf8');
  t.true(line.endsWith('\n'));
  t.deepEqual(JSON.parse(line).ips, RESULT.ips);
});

test('an ADD whose result nobody reads is undone: the relay sends the DEL itself', async (t) => {
  const a = await agent(t);
  const child = spawn(BIN, [], { env: addEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout.destroy(); // the runtime is gone before the result is written
  child.stdin.on('error', () => undefined);
  child.stdin.end(conf(a));
  const r = await collect(child);
  t.is(r.code, 1);
  t.regex(r.stderr, /stdout: EPIPE; output not delivered/);
  t.deepEqual(a.requests.map((q) => q.verb), ['ADD', 'DEL']);
  t.like(a.requests[1], { containerId: 'c1', ifName: 'eth0', pool: 'p' });
});
