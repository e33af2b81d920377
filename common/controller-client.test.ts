/**
 * ControllerClient with several endpoints: which failures move a call to the
 * next replica and which are the answer. Small HTTP servers on unix sockets
 * stand in for replicas, each answering one fixed way.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControllerClient, connectionError, controllerUrls } from './controller-client';
import { BerthError } from './errors';
import { Pki } from '../sim/pki';

const dir = mkdtempSync(join(tmpdir(), 'berth-cc-'));
const servers: Server[] = [];
test.after.always(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

interface Replica { url: string; hits: number }

/** A replica that always answers `status` with `body` (a string is sent as is). */
async function replica(name: string, status: number, body: unknown): Promise<Replica> {
  const path = join(dir, `${name}.sock`);
  const r: Replica = { url: `unix://${path}`, hits: 0 };
  const srv = createServer((_req, res) => {
    r.hits++;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  });
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(path, resolve));
  return r;
}

const errBody = (kind: string) => ({ error: new BerthError(kind as never, 'x').toBody() });
const gone = () => ({ url: `unix://${join(dir, 'nobody.sock')}`, hits: 0 });

test('controllerUrls splits comma lists and repeated values', (t) => {
  t.deepEqual(controllerUrls('http://a:1, http://b:2'), ['http://a:1', 'http://b:2']);
  t.deepEqual(controllerUrls(['unix:///x', 'http://b:2,http://c:3']), ['unix:///x', 'http://b:2', 'http://c:3']);
  t.throws(() => controllerUrls(' , '), { message: /no controller URL/ });
});

test('an unreachable replica fails over to the next, and calls stick to the one that answered', async (t) => {
  const dead = gone();
  const ok = await replica('ok1', 200, { status: 'ok' });
  const moves: unknown[] = [];
  const c = new ControllerClient({ url: [dead.url, ok.url], onFailover: (f) => moves.push(f) });
  t.teardown(() => c.close());
  t.like(await c.health(), { status: 'ok' });
  t.is(c.currentUrl, ok.url);
  t.like(moves, [{ from: dead.url, to: ok.url }]);
  t.regex((moves[0] as { why: string }).why, /controller unreachable/);
  await c.health();
  t.is(ok.hits, 2);
  t.is(moves.length, 1, 'no further failover once settled');
});

test('503 StoreUnavailable and a non-JSON 502 fail over; the last failure is reported when none answers', async (t) => {
  const cut = await replica('cut', 503, errBody('StoreUnavailable'));
  const proxy = await replica('proxy', 502, '<html>bad gateway</html>');
  const ok = await replica('ok2', 200, { status: 'ok' });
  const c = new ControllerClient({ url: `${cut.url},${proxy.url},${ok.url}` });
  t.teardown(() => c.close());
  t.like(await c.health(), { status: 'ok' });
  t.deepEqual([cut.hits, proxy.hits, ok.hits], [1, 1, 1]);

  const none = new ControllerClient({ url: [cut.url, gone().url] });
  t.teardown(() => none.close());
  await t.throwsAsync(none.health(), { message: 'controller unreachable' });
});

test('an answer is final: 4xx and other 5xx kinds do not fail over', async (t) => {
  for (const [status, kind] of [[404, 'PoolNotFound'], [409, 'LeaseHeldElsewhere'], [400, 'InvalidRequest'], [503, 'Contention'], [500, 'Internal']] as const) {
    const first = await replica(`r-${status}-${kind}`, status, errBody(kind));
    const second = await replica(`s-${status}-${kind}`, 200, { status: 'ok' });
    const c = new ControllerClient({ url: [first.url, second.url] });
    const err = await t.throwsAsync(c.health());
    t.is((err as BerthError).kind, kind);
    t.is(second.hits, 0, `${kind}: the other replica was not asked`);
    t.is(c.currentUrl, first.url);
    c.close();
  }
});

test('an error answer without a Berth error body becomes one clear error coded by its status, never Internal: {}', async (t) => {
  for (const [status, body, kind, msg] of [
    [431, '', 'RequestTooLarge', 'controller answered 431 Request Header Fields Too Large'],
    [400, '', 'InvalidRequest', 'controller answered 400 Bad Request'],
    [401, '{}', 'Unauthorized', 'controller answered 401 Unauthorized'],
    [413, '<html>too big</html>', 'RequestTooLarge', 'controller answered 413 Payload Too Large'],
    [404, '{"message":"no"}', 'NotFound', 'controller answered 404 Not Found'],
    [500, '', 'Internal', 'controller answered 500 Internal Server Error'],
  ] as const) {
    const r = await replica(`plain-${status}-${body.length}`, status, body);
    const c = new ControllerClient({ url: r.url });
    const err = await t.throwsAsync(c.health()) as BerthError;
    t.is(err.kind, kind, `${status} ${body}`);
    t.is(err.message, msg);
    t.is(err.details, body === '' ? 'empty body' : body);
    c.close();
  }
});

test('connection failures: certificate and TLS protocol errors are TlsFailed naming the flag to check; the rest TryAgainLater', (t) => {
  const e = (code: string, message: string) => Object.assign(new Error(message), { code });
  t.like(connectionError('https://c:1', e('CERT_HAS_EXPIRED', 'certificate has expired')),
    { kind: 'TlsFailed', message: 'controller certificate not trusted', details: 'https://c:1: certificate has expired (CERT_HAS_EXPIRED); check --ca' });
  t.like(connectionError('https://c:1', e('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames")), { kind: 'TlsFailed' });
  t.like(connectionError('https://c:1', e('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'tlsv13 alert certificate required')),
    { kind: 'TlsFailed', message: 'TLS handshake with the controller failed' });
  t.regex(connectionError('https://c:1', e('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'tlsv13 alert certificate required')).details ?? '', /--cert, --key/);
  t.like(connectionError('https://c:1', e('EPROTO', 'write EPROTO wrong version number')), { kind: 'TlsFailed' });
  t.like(connectionError('https://c:1', e('ECONNREFUSED', 'connect ECONNREFUSED')), { kind: 'TryAgainLater', message: 'controller unreachable' });
});

test('a replica whose certificate is not trusted fails over to one that is', async (t) => {
  const pki = new Pki();
  t.teardown(() => pki.close());
  const ca = pki.ca('ca');
  const stranger = pki.ca('stranger');
  const serve = async (cert: { cert: string; key: string }) => {
    const srv = createHttpsServer({ cert: readFileSync(cert.cert), key: readFileSync(cert.key) }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    });
    servers.push(srv as unknown as Server);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    return `https://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  };
  const bad = await serve(pki.issue(stranger, 'bad'));
  const good = await serve(pki.issue(ca, 'good'));
  const moves: { why: string }[] = [];
  const c = new ControllerClient({ url: [bad, good], tls: { caFile: ca.cert }, onFailover: (f) => moves.push(f) });
  t.teardown(() => c.close());
  t.like(await c.health(), { status: 'ok' });
  t.is(c.currentUrl, good);
  t.regex(moves[0].why, /^controller certificate not trusted: https:\/\/127\.0\.0\.1:\d+: .*check --ca$/);
  const only = new ControllerClient({ url: bad, tls: { caFile: ca.cert } });
  t.teardown(() => only.close());
  await t.throwsAsync(only.health(), { message: 'controller certificate not trusted' });
});

/**
 * A controller that drops kept-alive connections the way an idle timeout
 * races a reuse: it answers a connection's first request and resets the
 * connection when a second one arrives on it. With resetFirst it resets
 * every connection at its first request.
 */
async function dropsKeptAlive(o: { resetFirst?: boolean } = {}) {
  const seen = { connections: 0 };
  const srv = createNetServer((sock) => {
    seen.connections++;
    let requests = 0;
    sock.on('data', (d) => {
      if (!d.includes('\r\n\r\n')) return;
      if (++requests > 1 || o.resetFirst) return sock.resetAndDestroy();
      const body = '{"status":"ok"}';
      sock.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`);
    });
    sock.on('error', () => undefined);
  });
  // TCP on loopback: only a TCP socket can be reset (RST), as a real idle timeout race does.
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv as unknown as Server);
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen };
}

test('a kept-alive connection reset as it is reused is retried once on a fresh one; a fresh connection reset is the answer', async (t) => {
  const s = await dropsKeptAlive();
  const c = new ControllerClient({ url: s.url });
  t.teardown(() => c.close());
  t.like(await c.health(), { status: 'ok' });
  t.like(await c.health(), { status: 'ok' }, 'the reset of the reused connection never reaches the caller');
  t.is(s.seen.connections, 2);
  // A write is not repeated: the controller may have committed it.
  const write = await t.throwsAsync(c.bind('p', { identity: 'k8s/a/b', host: 'h', containerId: 'c', ifName: 'eth0' } as never));
  t.true(write instanceof BerthError && write.kind === 'TryAgainLater', String(write));
  t.is(s.seen.connections, 2, 'no second connection for the write');

  const r = await dropsKeptAlive({ resetFirst: true });
  const c2 = new ControllerClient({ url: r.url });
  t.teardown(() => c2.close());
  const err = await t.throwsAsync(c2.health());
  t.true(err instanceof BerthError && err.kind === 'TryAgainLater', String(err));
  t.is(r.seen.connections, 1, 'no retry: the controller may have seen that request');
});

test('reads carry the newest revision this client\'s writes answered with; a client that wrote nothing sends none', async (t) => {
  const path = join(dir, 'ryw.sock');
  const seen: (string | undefined)[] = [];
  let rev = 40;
  let viewAt = '100';
  const srv = createServer((req, res) => {
    seen.push(req.headers['berth-min-revision'] as string | undefined);
    if (req.method === 'POST') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ lease: { ip: '198.18.0.2', revision: String(++rev) }, allocated: true }));
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'berth-revision': viewAt });
      res.end(JSON.stringify({ leases: [] }));
    }
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(path, r));
  const c = new ControllerClient({ url: `unix://${path}` });
  t.teardown(() => c.close());
  await c.leases({});
  await c.bind('p', { identity: 'k8s/a/b', host: 'h', containerId: 'c', ifName: 'eth0' } as never);
  await c.leases({});
  await c.release('p', { containerId: 'c' } as never);
  await c.leases({});
  // etcd restored from a snapshot: the replica's view is behind what this client saw, even after its wait.
  viewAt = '30';
  await c.leases({});
  await c.leases({});
  t.deepEqual(seen, [undefined, undefined, '41', undefined, '42', '42', '30'], 'one wait, then no more than the replica can show');
});

test('a write whose body names no revision is remembered by the header it answered with', async (t) => {
  const path = join(dir, 'ryw-header.sock');
  const seen: (string | undefined)[] = [];
  const srv = createServer((req, res) => {
    seen.push(req.headers['berth-min-revision'] as string | undefined);
    // A pool update: its body has no revision, the header has the view's, which shows the write.
    const body = req.method === 'PATCH' ? { name: 'p', holdSeconds: 60 } : { pools: [] };
    res.writeHead(200, { 'content-type': 'application/json', 'berth-revision': req.method === 'PATCH' ? '77' : '80' });
    res.end(JSON.stringify(body));
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(path, r));
  const c = new ControllerClient({ url: `unix://${path}` });
  t.teardown(() => c.close());
  await c.updatePool('p', { holdSeconds: 60 });
  await c.pools();
  t.deepEqual(seen, [undefined, '77']);
});
