/**
 * A generator-driven fuzz of the `berth` relay (cni/relay), run against its
 * sanitizer build (scripts/build-relay.sh asan): random CNI_* environments
 * and stdin, from a valid request mutated every way a runtime or an attacker
 * could, against a live fake agent that runs the real CNI contract
 * (test/doubles/fake-agent.ts), a missing socket, a socket that never
 * answers and one that answers garbage. Shared by test/cni-fuzz.test.ts (a
 * few thousand cases) and bench/cni-fuzz.ts (100,000 and more).
 *
 * Every case must end within its time limit with exit 0 or 1, nothing from
 * ASan or UBSan on stderr, and a stdout that is empty or exactly one JSON
 * object; exit 1 must come with exactly one CNI error object
 * ({cniVersion, code, msg, details}). Seeded, so a failure names the seed
 * and case that reproduce it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeAgent, type FakeAgent } from '../test/doubles/fake-agent';
import { ASAN_BIN, ensureRelay, execWithStdin } from './exec';

/** mulberry32: small, fast, seedable. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FuzzCase {
  env: Record<string, string>;
  stdin: Buffer;
}

export interface FuzzTargets {
  agent: FakeAgent;
  silentSocket: string;
  garbageSocket: string;
  missingSocket: string;
  netns: string;
  paths: string[];
  journalDir: string;
  close(): Promise<void>;
}

const RESULT = { cniVersion: '1.1.0', interfaces: [{ name: 'eth0', sandbox: '/x' }], ips: [{ address: '198.18.0.5/32', gateway: '198.18.0.1', interface: 0 }] };

export async function startFuzzTargets(): Promise<FuzzTargets> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-fuzz-'));
  const nsName = `berth-fuzz-${process.pid}`;
  execFileSync('ip', ['netns', 'add', nsName]);
  const agent = await startFakeAgent((req) => (req.verb === 'ADD' ? { ok: true, result: RESULT } : { ok: true }));
  agent.requests = new Proxy([], { get: (t, k) => (k === 'push' ? () => 0 : Reflect.get(t, k)) }); // unbounded runs keep nothing
  const held: Socket[] = [];
  const listen = async (name: string, onConn: (s: Socket) => void): Promise<[Server, string]> => {
    const p = join(dir, name);
    const srv = createServer(onConn);
    await new Promise<void>((res) => srv.listen(p, res));
    return [srv, p];
  };
  const [silent, silentSocket] = await listen('silent.sock', (s) => void held.push(s));
  const [garbage, garbageSocket] = await listen('garbage.sock', (s) => { s.on('error', () => undefined); s.end('{"code":0,"out":7}'); });
  const file = join(dir, 'file');
  writeFileSync(file, 'x');
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  mkdirSync(join(dir, 'sub'));
  const netns = `/run/netns/${nsName}`;
  return {
    agent, silentSocket, garbageSocket, missingSocket: join(dir, 'missing.sock'), netns,
    paths: [netns, netns, netns, file, fifo, join(dir, 'sub'), '/dev/null', '/proc/self/ns/mnt', '/proc/self/ns/net', join(dir, 'nope'), '', 'relative'],
    journalDir: join(dir, 'journal'),
    async close() {
      held.forEach((s) => s.destroy());
      silent.close();
      garbage.close();
      await agent.close();
      execFileSync('ip', ['netns', 'del', nsName]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const VERBS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'];
const JUNK = ['', ' ', '\t', 'é', '💥', '\u202e', '%s%n%x', '../../etc/passwd', '=', ';', '==;;', '\\', '"', '{', '\u0001', 'null'];

export function generate(r: () => number, t: FuzzTargets): FuzzCase {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const chance = (p: number) => r() < p;
  const str = (max: number): string => {
    const n = Math.floor(r() ** 3 * max);
    let s = '';
    for (let i = 0; i < n; i++) s += chance(0.8) ? String.fromCharCode(0x20 + Math.floor(r() * 95)) : pick(JUNK);
    return s;
  };
  const big = () => 'x'.repeat(pick([256, 257, 1024, 65536, 100_000])); // an env string is at most 128 KiB (MAX_ARG_STRLEN)
  const value = (depth: number): unknown => {
    switch (Math.floor(r() * (depth > 3 ? 5 : 8))) {
      case 0: return null;
      case 1: return chance(0.5);
      case 2: return pick([0, -1, 1.5, 1e308, 2 ** 53 + 1, 68, 1450, 65536]);
      case 3: return str(40);
      case 4: return pick(['1.0.0', '1.1.0', '0.4.0', '0.3.1', '9.9.9', '']);
      case 5: return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = Math.floor(r() * 4); i > 0; i--) o[pick(['ips', 'mac', 'address', 'interfaces', 'routes', 'dns', 'cni', '__proto__', str(8)])] = value(depth + 1);
        return o;
      }
    }
  };
  const verb = chance(0.9) ? pick(VERBS) : pick([...JUNK, 'add', 'FROB', big()]);
  const conf: Record<string, unknown> = {
    cniVersion: pick(['1.0.0', '1.1.0', '0.4.0', '0.3.1', '0.3.0']), name: 'berth-net', type: 'berth', pool: 'p',
    agentSocket: t.agent.socketPath, journalDir: t.journalDir,
  };
  if (verb === 'CHECK' || chance(0.1)) conf.prevResult = chance(0.6) ? RESULT : value(0);
  if (verb === 'GC' || chance(0.05)) conf['cni.dev/valid-attachments'] = chance(0.7) ? [{ containerID: 'c1', ifname: 'eth0' }] : value(0);
  // Mutations of the config.
  for (let i = Math.floor(r() * 4); i > 0; i--) {
    const key = pick(['cniVersion', 'name', 'type', 'pool', 'agentSocket', 'agentTimeoutMs', 'agentConnectTimeoutMs', 'agentAcceptTimeoutMs', 'journalDir', 'mtu', 'logLevel', 'dns', 'args', 'runtimeConfig', 'capabilities', 'prevResult', str(10)]);
    if (chance(0.3)) delete conf[key];
    else if (key === 'agentSocket' || key === 'journalDir') conf[key] = pick([str(30), '/', '', '/dev/null', big(), 5]);
    else if (key === 'agentTimeoutMs' || key === 'agentConnectTimeoutMs' || key === 'agentAcceptTimeoutMs') conf[key] = pick([100, 10, 0, -5, 'x', 600000, 1e12]);
    else if (key === 'runtimeConfig') conf[key] = { mac: pick(['02:00:00:00:00:01', '01:00:5e:00:00:01', '00:00:00:00:00:00', str(17)]), ips: [pick(['198.18.0.9', 'x', '198.18.0.9/24'])] };
    else conf[key] = value(0);
  }
  // Which agent, after the mutations: one that never answers gets a short timeout.
  if (chance(0.1)) { conf.agentSocket = t.missingSocket; }
  else if (chance(0.03)) { conf.agentSocket = t.silentSocket; conf.agentTimeoutMs = 100; conf.agentConnectTimeoutMs = 100; conf.agentAcceptTimeoutMs = 100; }
  else if (chance(0.05)) { conf.agentSocket = t.garbageSocket; }
  let stdin: Buffer;
  const text = JSON.stringify(conf);
  switch (Math.floor(r() * 12)) {
    case 0: stdin = Buffer.from(text.slice(0, Math.floor(r() * text.length))); break; // truncated
    case 1: stdin = Buffer.from(Array.from({ length: Math.floor(r() * 200) }, () => Math.floor(r() * 256))); break; // random bytes
    case 2: { // deep nesting in a field
      const d = pick([60, 65, 2048, 2049, 5000, 100000]);
      stdin = Buffer.from(text.replace(/}$/, `,"args":${'['.repeat(d)}${chance(0.5) ? ']'.repeat(d) : ''}}`));
      break;
    }
    case 3: { // a byte flipped, or invalid UTF-8 inside a string
      const b = Buffer.from(text);
      for (let i = Math.floor(r() * 3) + 1; i > 0; i--) b[Math.floor(r() * b.length)] = pick([0x00, 0x22, 0x5c, 0x7b, 0xff, 0xc3, 0x80, 0x0a]);
      stdin = b;
      break;
    }
    case 4: stdin = Buffer.from(pick(['', ' ', 'null', '[]', '"x"', '1', '{}', '{"cniVersion":"1.0.0"}', '\uFEFF{}'])); break;
    case 5: stdin = Buffer.from(`${text}${pick(['x', '{}', '\n\n', '\0'])}`); break; // trailing data
    default: stdin = Buffer.from(text);
  }
  const env: Record<string, string> = { PATH: '/nonexistent' };
  const set = (k: string, v: string) => { if (!v.includes('\0')) env[k] = v; };
  if (!chance(0.03)) set('CNI_COMMAND', verb);
  if (!chance(0.05)) set('CNI_CONTAINERID', chance(0.85) ? `c${Math.floor(r() * 50)}` : pick([str(20), big(), '-x', 'a b', '']));
  if (!chance(0.05)) set('CNI_NETNS', chance(0.8) ? pick(t.paths) : str(30));
  if (!chance(0.05)) set('CNI_IFNAME', chance(0.85) ? 'eth0' : pick(['a'.repeat(16), 'é', 'eth/0', '.', '..', 'eth 0', str(20), '']));
  if (chance(0.6)) set('CNI_ARGS', chance(0.6) ? 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p' : pick(['__proto__=x', 'IgnoreUnknown=1;__proto__=1;constructor=2', 'MAC=01:00:5e:00:00:01', 'IP=x', 'a', '=', str(40), big()]));
  if (chance(0.5)) set('CNI_PATH', pick(['/opt/cni/bin', str(20)]));
  return { env, stdin };
}

export interface Verdict {
  ok: boolean;
  why?: string;
}

/** The contract every case must meet (see the header). */
export function judge(code: number | null, signal: string | null, stdout: string, stderr: string): Verdict {
  if (signal) return { ok: false, why: `killed by ${signal}` };
  if (/AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/.test(stderr)) return { ok: false, why: `sanitizer: ${stderr.slice(0, 2000)}` };
  if (code !== 0 && code !== 1) return { ok: false, why: `exit ${code}` };
  const out = stdout.trim();
  if (out === '') return code === 0 ? { ok: true } : { ok: false, why: 'exit 1 with nothing on stdout' };
  if (out.includes('\n')) return { ok: false, why: 'more than one line on stdout' };
  let j: any;
  try {
    j = JSON.parse(out);
  } catch {
    return { ok: false, why: 'stdout is not JSON' };
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) return { ok: false, why: 'stdout is not a JSON object' };
  if (code === 1 && !(Number.isInteger(j.code) && typeof j.msg === 'string' && typeof j.cniVersion === 'string' && typeof j.details === 'string')) {
    return { ok: false, why: `exit 1 without a CNI error object: ${out.slice(0, 300)}` };
  }
  if (/\n\s+at /.test(stdout + stderr)) return { ok: false, why: 'a stack trace' };
  return { ok: true };
}

export interface FuzzReport {
  cases: number;
  failures: { seed: number; index: number; why: string; env: Record<string, string>; stdin: string }[];
  exits: Record<string, number>;
  ms: number;
}

/** Runs `cases` generated cases, `concurrency` at a time, each bounded by `limitMs`. */
export async function fuzzRelay(o: { seed: number; cases: number; concurrency?: number; limitMs?: number; leakEvery?: number; onProgress?(done: number): void }): Promise<FuzzReport> {
  await ensureRelay('asan');
  const targets = await startFuzzTargets();
  const r = rng(o.seed);
  const report: FuzzReport = { cases: 0, failures: [], exits: {}, ms: 0 };
  const started = Date.now();
  let next = 0;
  // LeakSanitizer's exit-time scan costs ~180 ms here, against ~10 ms for a whole case: it runs on every leakEvery-th case.
  const leakEvery = o.leakEvery ?? 20;
  const env0 = (i: number) => ({ ASAN_OPTIONS: `detect_leaks=${i % leakEvery === 0 ? 1 : 0}:abort_on_error=0:exitcode=86`, UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1:exitcode=87' });
  const worker = async () => {
    while (next < o.cases) {
      const index = next++;
      const c = generate(r, targets);
      const res = await execWithStdin(ASAN_BIN, [], { ...c.env, ...env0(index) }, c.stdin, { timeoutMs: o.limitMs ?? 15_000 });
      const v = res.timedOut ? { ok: false, why: 'hang: no exit within the limit' } : judge(res.code, res.signal ?? null, res.stdout, res.stderr);
      report.cases++;
      const key = res.code === 1 ? `1/${res.json?.code ?? '?'}` : String(res.code);
      report.exits[key] = (report.exits[key] ?? 0) + 1;
      if (!v.ok && report.failures.length < 20) {
        const env = Object.fromEntries(Object.entries(c.env).map(([k, x]) => [k, x.length > 200 ? `${x.slice(0, 200)}... (${x.length} chars)` : x]));
        report.failures.push({ seed: o.seed, index, why: (v.why ?? '').slice(0, 1500), env, stdin: c.stdin.subarray(0, 300).toString('latin1') });
      }
      if (o.onProgress && report.cases % 1000 === 0) o.onProgress(report.cases);
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency ?? 4 }, worker));
  } finally {
    await targets.close();
  }
  report.ms = Date.now() - started;
  return report;
}
