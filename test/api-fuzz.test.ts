/**
 * Property: whatever request arrives (generated methods, paths, headers and
 * bodies, sent over raw sockets to the controller binary on a real etcd),
 * the answer is JSON with a 2xx, 4xx or 5xx status, never an Internal error,
 * and the process survives to answer the next one. At the end its log holds
 * no internal error and every stderr line is JSON.
 */
import test from 'ava';
import fc from 'fast-check';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { isErrorKind } from '../common/errors';
import { freePort, startEtcd, type EtcdServer } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { rawRequest } from './harness/raw-http';

let etcd: EtcdServer;
let child: ChildProcess;
let port: number;
let stderr = '';

test.before(async () => {
  etcd = await startEtcd();
  port = await freePort();
  child = spawn(process.execPath, [join(__dirname, '..', 'controller', 'main.js'), '--etcd-endpoints', etcd.endpoint, '--listen', `127.0.0.1:${port}`,
    '--body-timeout-ms', '500'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BERTH_LOG_LEVEL: 'info' } });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  await eventually(() => { if (!/controller listening/.test(stderr)) throw new Error(stderr); }, { timeoutMs: 20_000, what: 'controller listening' });
});

test.after.always(async () => {
  if (child?.pid !== undefined && child.exitCode === null) {
    process.kill(child.pid, 'SIGTERM');
    await eventually(() => { if (child.exitCode === null && child.signalCode === null) throw new Error('running'); }).catch(() => process.kill(child.pid!, 'SIGKILL'));
  }
  await etcd?.stop();
});

const ROUTES = ['/healthz', '/v1/pools', '/v1/pools/{}', '/v1/pools/{}/bind', '/v1/pools/{}/release', '/v1/pools/{}/pin', '/v1/pools/{}/leases/{}',
  '/v1/leases', '/v1/leases/{}', '/v1/history', '/v1/hosts', '/v1/hosts/{}'];

// Path segments: names, addresses, percent-escapes good and bad, non-ASCII, long.
const segment = fc.oneof(
  fc.constantFrom('fz', 'default', '198.18.0.5', '%', '%zz', '%2F', '%E0%A4%A', '%ff', '..', '', 'x'.repeat(300)),
  fc.stringMatching(/^[a-z0-9.%_-]{1,20}$/),
  fc.string({ maxLength: 12 }).map(encodeURIComponent),
);
const path = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...ROUTES), fc.array(segment, { minLength: 2, maxLength: 2 }), fc.constantFrom('', '?force=1', '?pool=%zz&limit=x', '?at=whenever', '?%=%'))
    .map(([r, [a, b], q]) => r.replace('{}', a).replace('{}', b) + q) },
  fc.stringMatching(/^\/[ -~]{0,40}$/).map((p) => p.replace(/ /g, '%20')),
  fc.constantFrom('*', '//', 'http://evil.example/v1/pools', '/v1/pools#x', '/\u00e9'),
);
const method = fc.oneof(
  { arbitrary: fc.constantFrom('GET', 'POST', 'PATCH', 'DELETE'), weight: 8 },
  { arbitrary: fc.constantFrom('PUT', 'TRACE', 'OPTIONS', 'CONNECT', 'HEAD'), weight: 1 },
  { arbitrary: fc.stringMatching(/^[A-Z]{1,8}$/), weight: 1 },
);
const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v));
const body = fc.oneof(
  fc.constant(''),
  json,
  fc.record({ name: fc.stringMatching(/^[a-z]{1,6}$/), cidr: fc.constantFrom('198.18.9.0/24', '198.18.300.0/24', 'x'), reserved: fc.array(json, { maxLength: 3 }) }).map((o) => JSON.stringify(o)),
  fc.record({ identity: fc.string({ maxLength: 10 }), host: fc.constantFrom('h', ''), containerId: fc.string({ maxLength: 10 }), ifName: fc.constantFrom('eth0', 'x'.repeat(20)) }).map((o) => JSON.stringify(o)),
  fc.integer({ min: 33, max: 3000 }).map((d) => `{"reserved":${'['.repeat(d)}${']'.repeat(d)}}`),
  fc.string({ unit: 'binary', maxLength: 200 }),
);
const contentType = fc.constantFrom(undefined, 'application/json', 'application/json', 'application/json', 'APPLICATION/JSON; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', '');
const auth = fc.constantFrom(undefined, undefined, 'Bearer x', 'bearer', 'Basic Zm9v', '');
const host = fc.constantFrom('ok', 'ok', 'ok', 'ok', 'ok', 'localhost', 'evil.example', undefined);
const framing = fc.constantFrom('length', 'length', 'length', 'wrong-length', 'chunked');

test('property: every generated request gets a JSON 2xx/4xx/5xx and never an internal error; the controller survives', async (t) => {
  let runs = 0;
  const codes = new Map<string, number>();
  await fc.assert(fc.asyncProperty(method, path, body, contentType, auth, host, framing, async (m, p, b, ct, au, h, fr) => {
    runs++;
    const lines = [`${m} ${p} HTTP/1.1`];
    if (h !== undefined) lines.push(`Host: ${h === 'ok' ? `127.0.0.1:${port}` : h === 'localhost' ? `localhost:${port}` : h}`);
    if (ct !== undefined) lines.push(`Content-Type: ${ct}`);
    if (au !== undefined) lines.push(`Authorization: ${au}`);
    const bytes = Buffer.from(b, 'utf8');
    let payload: string | Buffer = bytes;
    if (fr === 'chunked') {
      lines.push('Transfer-Encoding: chunked');
      payload = bytes.length ? Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n0\r\n\r\n')]) : '0\r\n\r\n';
    } else {
      lines.push(`Content-Length: ${fr === 'wrong-length' ? Math.max(0, bytes.length - 1) : bytes.length}`);
    }
    const a = await rawRequest({ host: '127.0.0.1', port }, lines.join('\r\n'), payload);
    const where = `${m} ${p.slice(0, 80)} -> ${a.raw.slice(0, 300)}`;
    if (!(a.status >= 200 && a.status < 300) && !(a.status >= 400 && a.status < 600)) throw new Error(`status: ${where}`);
    if (a.headers['content-type'] !== 'application/json') throw new Error(`content type: ${where}`);
    const code = a.status < 300 ? String(a.status) : `${a.status} ${a.body?.error?.code}`;
    codes.set(code, (codes.get(code) ?? 0) + 1);
    if (m === 'HEAD') return true;
    if (a.body === undefined) throw new Error(`not JSON: ${where}`);
    if (a.status >= 400) {
      if (!isErrorKind(a.body.error?.code)) throw new Error(`no error kind: ${where}`);
      if (a.body.error.code === 'Internal') throw new Error(`internal error: ${where}`);
    }
    return true;
  }), { numRuns: Number(process.env.BERTH_FUZZ_RUNS ?? 400) });
  t.true(runs >= Number(process.env.BERTH_FUZZ_RUNS ?? 400));
  t.log([...codes].sort().map(([k, n]) => `${k}: ${n}`).join(', '));
  // Not vacuous: requests got past the guards into the routes, and some succeeded.
  t.true([...codes.keys()].some((k) => k.startsWith('2')), 'some requests succeeded');
  t.true([...codes.keys()].some((k) => /PoolNotFound|LeaseNotFound|HostNotFound|InvalidRequest|Decode/.test(k)), 'some reached a route');
  // Still alive and answering; nothing it logged was an internal error, and all of it was JSON.
  t.is(child.exitCode, null);
  t.is((await rawRequest({ host: '127.0.0.1', port }, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}`)).status, 200);
  const logged = stderr.trimEnd().split('\n');
  for (const l of logged) t.notThrows(() => JSON.parse(l), l.slice(0, 200));
  t.false(logged.some((l) => /"internal error"/.test(l)), logged.filter((l) => /internal error/.test(l)).join('\n').slice(0, 1000));
});
