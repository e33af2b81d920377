/**
 * The controller's HTTP surface against bad requests, each seen when the API
 * was probed (issue 13): every one gets a JSON 4xx naming the problem and
 * changes nothing. Raw sockets send what Node's client would refuse to.
 */
import test from 'ava';
import * as http from 'node:http';
import * as net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startController, type RunningController } from '../controller/app';
import { ControllerClient } from '../common/controller-client';
import { isBerthError, type BerthError } from '../common/errors';
import { silentLogger } from '../common/log';
import { MAX_BODY } from '../controller/request';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { rawRequest, type RawAnswer } from './harness/raw-http';

let etcd: EtcdServer;
let ctl: RunningController;
let dir: string;
let port: number;
let sock: string;

test.before(async () => {
  etcd = await startEtcd();
  dir = mkdtempSync(join(tmpdir(), 'berth-api-'));
  sock = join(dir, 'api.sock');
  ctl = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: ['127.0.0.1:0', `unix://${sock}`], log: silentLogger });
  port = Number(new URL(ctl.url).port);
});

test.after.always(async () => {
  await ctl?.stop();
  await etcd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Answer = RawAnswer;
const raw = (head: string, body = '', where: net.NetConnectOpts = { port, host: '127.0.0.1' }, opts: { keepOpen?: boolean } = {}) => rawRequest(where, head, body, opts);

const hostHdr = () => `Host: 127.0.0.1:${port}`;
const jsonError = (t: any, a: Answer, status: number, code: string) => {
  t.is(a.status, status, a.raw.slice(0, 300));
  t.is(a.headers['content-type'], 'application/json');
  t.is(a.body?.error?.code, code, a.raw.slice(0, 300));
  t.false(a.raw.includes('    at '), 'no stack trace');
};

test('malformed percent-encoding in the path is a 400', async (t) => {
  for (const p of ['GET /v1/leases/%', 'GET /v1/leases/%zz', 'GET /v1/pools/%E0%A4%A', 'DELETE /v1/hosts/%ff']) {
    jsonError(t, await raw(`${p} HTTP/1.1\r\n${hostHdr()}`), 400, 'InvalidRequest');
  }
});

test('a reserved array nested 20,000 deep is a 400 and creates nothing', async (t) => {
  const body = `{"name":"deep","cidr":"198.18.61.0/24","reserved":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
  const a = await raw(`POST /v1/pools HTTP/1.1\r\n${hostHdr()}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}`, body);
  jsonError(t, a, 400, 'Decode');
  t.is((await fetch(`${ctl.url}/v1/pools/deep`)).status, 404);
});

test('a body of 64 KiB + 1 gets a JSON 413, and the connection still answers', async (t) => {
  const pad = 'x'.repeat(MAX_BODY + 1 - '{"name":"big","cidr":"198.18.62.0/24","pad":""}'.length);
  const body = `{"name":"big","cidr":"198.18.62.0/24","pad":"${pad}"}`;
  t.is(body.length, MAX_BODY + 1);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const send = (b: string) => new Promise<Answer>((resolve, reject) => {
    const req = http.request(`${ctl.url}/v1/pools`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers as Record<string, string>, body: JSON.parse(text), raw: text }));
    });
    req.on('error', reject);
    req.end(b);
  });
  jsonError(t, await send(body), 413, 'RequestTooLarge');
  // The same keep-alive connection (maxSockets 1) carries the next request.
  const ok = await send('{"name":"small","cidr":"198.18.62.0/24"}');
  t.is(ok.status, 201);
  t.is((await fetch(`${ctl.url}/v1/pools/big`)).status, 404);
});

test('a declared Content-Length over the limit gets a 413 before the body is read', async (t) => {
  const a = await raw(`POST /v1/pools HTTP/1.1\r\n${hostHdr()}\r\nContent-Type: application/json\r\nContent-Length: 10000000`, '{"name":');
  jsonError(t, a, 413, 'RequestTooLarge');
});

test('a chunked body that never ends gets a 408 after the body deadline, and the connection is closed', async (t) => {
  // A short body deadline on a controller of its own: the shared one keeps the default, so
  // large bodies in the tests running beside this one never meet a deadline meant for this.
  const slow = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', bodyTimeoutMs: 300, log: silentLogger });
  t.teardown(() => slow.stop());
  const slowPort = Number(new URL(slow.url).port);
  const a = await raw(`POST /v1/pools HTTP/1.1\r\nHost: 127.0.0.1:${slowPort}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked`, '5\r\n{"nam\r\n',
    { port: slowPort, host: '127.0.0.1' }, { keepOpen: true });
  jsonError(t, a, 408, 'RequestTimeout');
  t.is(a.headers.connection, 'close');
});

test('writes must be application/json: text/plain and form posts get 415 and create nothing', async (t) => {
  const body = '{"name":"plain","cidr":"198.18.63.0/24"}';
  for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', undefined]) {
    const r = await fetch(`${ctl.url}/v1/pools`, { method: 'POST', body, headers: type ? { 'content-type': type } : {} });
    t.is(r.status, 415, String(type));
    t.is(((await r.json()) as any).error.code, 'UnsupportedMediaType');
  }
  t.is((await fetch(`${ctl.url}/v1/pools/plain`)).status, 404);
  const ok = await fetch(`${ctl.url}/v1/pools`, { method: 'POST', body, headers: { 'content-type': 'Application/JSON; charset=utf-8' } });
  t.is(ok.status, 201);
});

test('a loopback listener refuses a foreign Host (DNS rebinding); the unix socket takes any', async (t) => {
  for (const h of ['evil.example', `evil.example:${port}`, `127.0.0.1:${port + 1}`]) {
    jsonError(t, await raw(`GET /v1/pools HTTP/1.1\r\nHost: ${h}`), 400, 'InvalidRequest');
  }
  for (const h of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
    t.is((await raw(`GET /v1/pools HTTP/1.1\r\nHost: ${h}`)).status, 200, h);
  }
  t.is((await raw('GET /v1/pools HTTP/1.1\r\nHost: evil.example', '', { path: sock })).status, 200);
});

test('a known path with another method is a 405 with Allow', async (t) => {
  for (const [method, path, allow] of [
    ['PUT', '/v1/pools', 'POST, GET'], ['PATCH', '/v1/pools', 'POST, GET'], ['TRACE', '/v1/pools', 'POST, GET'],
    ['PUT', '/v1/pools/x', 'GET, PATCH, DELETE'], ['GET', '/v1/pools/x/bind', 'POST'], ['OPTIONS', '/v1/hosts', 'GET'],
  ]) {
    const a = await raw(`${method} ${path} HTTP/1.1\r\n${hostHdr()}`);
    jsonError(t, a, 405, 'MethodNotAllowed');
    t.is(a.headers.allow, allow, `${method} ${path}`);
  }
  jsonError(t, await raw(`GET /v2/nothing HTTP/1.1\r\n${hostHdr()}`), 404, 'NotFound');
});

test('what Node\'s parser rejects is answered in JSON too: unknown method, bad request line, headers too large', async (t) => {
  jsonError(t, await raw(`FROB /v1/pools HTTP/1.1\r\n${hostHdr()}`), 405, 'MethodNotAllowed');
  jsonError(t, await raw(`GET /v1/pools HTTP/9\r\n${hostHdr()}`), 400, 'InvalidRequest');
  jsonError(t, await raw(`GET /v1/pools/${'p'.repeat(100_000)} HTTP/1.1\r\n${hostHdr()}`), 431, 'RequestTooLarge');
});

test('a 100,000-character pool name reaches the caller as one clear RequestTooLarge, not Internal', async (t) => {
  const c = new ControllerClient({ url: ctl.url });
  t.teardown(() => c.close());
  const e = await t.throwsAsync(c.pool('p'.repeat(100_000)));
  t.true(isBerthError(e));
  t.is((e as BerthError).kind, 'RequestTooLarge');
  t.is((e as BerthError).message, 'request headers or URL too large');
});

test('the auth scheme is case-insensitive: "bearer" is accepted', async (t) => {
  const guarded = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', token: 'sekret', log: silentLogger });
  t.teardown(() => guarded.stop());
  for (const auth of ['Bearer sekret', 'bearer sekret', 'BEARER sekret']) {
    t.is((await fetch(`${guarded.url}/v1/pools`, { headers: { authorization: auth } })).status, 200, auth);
  }
  for (const auth of ['bearer wrong', 'Basic c2VrcmV0', 'sekret']) {
    const r = await fetch(`${guarded.url}/v1/pools`, { headers: { authorization: auth } });
    t.is(r.status, 401, auth);
  }
});
