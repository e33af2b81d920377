import test from 'ava';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, Registry } from 'prom-client';
import { get, metric, parseExposition } from '../sim/prom';
import { isBerthError } from './errors';
import { silentLogger } from './log';
import { startMetricsServer } from './metrics-http';

function registry(): Registry {
  const r = new Registry();
  new Counter({ name: 'x_total', help: 'x', registers: [r] }).inc(2);
  return r;
}

test('serves /metrics, /healthz and /readyz on a unix socket (mode 0600); 404 and 405 are JSON', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-mhttp-'));
  let ready = false;
  const s = await startMetricsServer(`unix://${join(dir, 'm.sock')}`, registry(), () => ({ a: true, b: ready }), silentLogger);
  t.teardown(async () => { await s.close(); rmSync(dir, { recursive: true, force: true }); });
  t.is(statSync(join(dir, 'm.sock')).mode & 0o777, 0o600);
  const m = await get(s.url, '/metrics');
  t.is(m.status, 200);
  t.is(metric(parseExposition(m.body), 'x_total'), 2);
  t.deepEqual(JSON.parse((await get(s.url, '/healthz')).body), { ok: true });
  const notYet = await get(s.url, '/readyz');
  t.is(notYet.status, 503);
  t.deepEqual(JSON.parse(notYet.body), { ready: false, checks: { a: true, b: false } });
  ready = true;
  t.is((await get(s.url, '/readyz')).status, 200);
  const missing = await get(s.url, '/v1/pools');
  t.is(missing.status, 404);
  t.is(JSON.parse(missing.body).error.kind, 'NotFound');
  const post = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ socketPath: join(dir, 'm.sock'), path: '/metrics', method: 'POST' }, resolve);
    req.on('error', reject);
    req.end();
  });
  post.resume();
  t.is(post.statusCode, 405);
  t.is(post.headers.allow, 'GET, HEAD');
});

test('a TCP listener reports its address; a bad or taken address is one InvalidConfig error', async (t) => {
  const s = await startMetricsServer('127.0.0.1:0', registry(), () => ({}), silentLogger);
  t.teardown(() => s.close());
  t.regex(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.is((await get(s.url, '/readyz')).status, 200);
  for (const bad of ['nonsense', '127.0.0.1:70000', s.url.slice('http://'.length), 'unix://']) {
    const e = await t.throwsAsync(startMetricsServer(bad, registry(), () => ({}), silentLogger));
    t.true(isBerthError(e) && e.kind === 'InvalidConfig' && e.message === 'cannot listen for metrics', `${bad}: ${String(e)}`);
  }
});
