/**
 * run() in-process: argument handling, the requests each command sends, and
 * the one-line failure contract, against a canned HTTP server (no etcd).
 */
import test from 'ava';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { run } from './run';

interface Seen { method: string; url: string; auth?: string; body: string }

/** A fake controller: records requests and answers from a route table. */
async function fake(routes: Record<string, [number, unknown]>): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, body });
      const path = (req.url ?? '').split('?')[0];
      const [status, reply] = routes[`${req.method} ${path}`] ?? [404, { error: { code: 'NotFound', cniCode: 111, msg: 'no such resource', details: path } }];
      const text = JSON.stringify(reply);
      res.writeHead(status, { 'content-type': 'application/json' }).end(text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, seen, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

async function cli(argv: string[], env: Record<string, string | undefined> = {}, now = Date.parse('2026-11-23T10:00:00Z')) {
  let stdout = '', stderr = '';
  const code = await run(argv, { stdout: { write: (s: string) => { stdout += s; } }, stderr: { write: (s: string) => { stderr += s; } }, env, now: () => now });
  return { code, stdout, stderr };
}

test('usage errors: one line, exit 2, nothing on stdout', async (t) => {
  for (const [argv, line] of [
    [[], 'berthctl: missing command: pools, leases, hosts, status (see berthctl --help)'],
    [['pools'], 'berthctl: pools needs a subcommand: ls, create, show, set, delete (see berthctl pools --help)'],
    [['nodes', 'ls'], "berthctl: unknown command 'nodes'"],
    [['pools', 'ls', '--jsn'], "berthctl: unknown option '--jsn' (Did you mean --json?)"],
    [['pools', 'create', 'web'], "berthctl: required option '--cidr <cidr>' not specified"],
    [['leases', 'show'], "berthctl: missing required argument 'ip-or-identity'"],
    [['leases', 'show', 'a', 'b'], "berthctl: too many arguments for 'show'. Expected 1 argument but got 2."],
    [['leases', 'ls', '--state', 'gone'], "berthctl: option '--state <state>' argument 'gone' is invalid. Allowed choices are bound, held, pinned."],
    [['leases', 'history', 'x', '--limit', '0'], "berthctl: option '--limit <n>' argument '0' is invalid. expected a positive integer"],
    [['leases', 'pin', 'x', '--pool', 'p', '--ip', '1.2.3'], "berthctl: option '--ip <ip>' argument '1.2.3' is invalid. not an IP address"],
    [['pools', 'ls', '--controller', 'ftp://x'], 'berthctl: controller URL must be http(s)://host:port or unix:///path: ftp://x'],
  ] as [string[], string][]) {
    const r = await cli(argv);
    t.is(r.code, 2, argv.join(' '));
    t.is(r.stdout, '');
    t.is(r.stderr, `${line}\n`, argv.join(' '));
  }
});

test('--help prints to stdout and exits 0, with the global options', async (t) => {
  const r = await cli(['leases', 'history', '--help']);
  t.is(r.code, 0);
  t.is(r.stderr, '');
  t.regex(r.stdout, /Usage: berthctl leases history \[options\] <ip-or-identity>/);
  t.regex(r.stdout, /--controller <url>/);
});

test('filters and times travel as query parameters; --at leaves as exact UTC', async (t) => {
  const srv = await fake({ 'GET /v1/leases': [200, { leases: [] }], 'GET /v1/history': [200, { events: [] }] });
  t.teardown(() => srv.close());
  const env = { BERTH_CONTROLLER: srv.url };
  t.is((await cli(['leases', 'ls', '--pool', 'web', '--state', 'held', '--host', 'node-a', '--identity', 'k8s/a/b'], env)).code, 0);
  const q0 = new URL(srv.seen[0].url, 'http://x');
  t.is(q0.pathname, '/v1/leases');
  // Without --limit, berthctl follows pages, asking for large ones.
  t.deepEqual(Object.fromEntries(q0.searchParams), { pool: 'web', host: 'node-a', state: 'held', identity: 'k8s/a/b', limit: '5000' });
  const r = await cli(['leases', 'history', '198.18.3.7', '--at', '2026-11-22 14:02', '--limit', '5'], env);
  t.is(r.code, 0, r.stderr);
  const q = new URL(srv.seen[1].url, 'http://x').searchParams;
  t.is(q.get('ip'), '198.18.3.7');
  t.is(q.get('at'), new Date(2026, 10, 22, 14, 2).toISOString());
  t.is(q.get('limit'), '5');
  t.regex(r.stdout, /no lease recorded/);
  await cli(['leases', 'history', 'k8s/a/b', '--since', '1h ago'], env);
  const q2 = new URL(srv.seen[2].url, 'http://x').searchParams;
  t.is(q2.get('identity'), 'k8s/a/b');
  t.is(q2.get('since'), '2026-11-23T09:00:00.000Z');
});

test('pools create sends the parsed body; --controller beats the environment', async (t) => {
  const srv = await fake({ 'POST /v1/pools': [201, { name: 'web', cidr: '198.18.40.0/24', gateway: '198.18.40.1', reserved: [], holdSeconds: 5400, createdAt: '', size: 253, bound: 0, held: 0, pinned: 0, free: 253 }] });
  t.teardown(() => srv.close());
  const r = await cli(['--controller', srv.url, 'pools', 'create', 'web', '--cidr', '198.18.40.0/24', '--hold', '1h30m', '--reserve', '198.18.40.9', '--reserve', '198.18.40.10,198.18.40.11'],
    { BERTH_CONTROLLER: 'http://127.0.0.1:1' });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(srv.seen[0].body), { name: 'web', cidr: '198.18.40.0/24', reserved: ['198.18.40.9', '198.18.40.10', '198.18.40.11'], holdSeconds: 5400 });
});

test('show by identity: zero leases is not-found, several pools needs --pool', async (t) => {
  const lease = (pool: string) => ({ pool, ip: '198.18.3.7', identity: 'k8s/a/b', state: 'held', pinned: false, createdAt: '', updatedAt: '', revision: '1' });
  const none = await fake({ 'GET /v1/leases': [200, { leases: [] }] });
  const two = await fake({ 'GET /v1/leases': [200, { leases: [lease('a'), lease('b')] }] });
  t.teardown(async () => { await none.close(); await two.close(); });
  t.deepEqual(await cli(['leases', 'show', 'k8s/a/b'], { BERTH_CONTROLLER: none.url }), { code: 3, stdout: '', stderr: 'berthctl: no such lease: identity k8s/a/b\n' });
  t.deepEqual(await cli(['leases', 'show', 'k8s/a/b'], { BERTH_CONTROLLER: two.url }),
    { code: 2, stdout: '', stderr: 'berthctl: pass --pool to choose one: k8s/a/b has leases in pools a, b\n' });
});

test('release sends DELETE with force; API errors keep their exit code', async (t) => {
  const srv = await fake({
    'DELETE /v1/pools/web/leases/198.18.3.7': [409, { error: { code: 'LeaseHeldElsewhere', cniCode: 102, msg: 'lease is bound to another container', details: '198.18.3.7 is bound to container c1 on node-a; use --force to free it anyway' } }],
  });
  t.teardown(() => srv.close());
  const r = await cli(['leases', 'release', '198.18.3.7', '--pool', 'web', '--force'], { BERTH_CONTROLLER: srv.url });
  t.is(srv.seen[0].method, 'DELETE');
  t.is(srv.seen[0].url, '/v1/pools/web/leases/198.18.3.7?force=1');
  t.deepEqual(r, { code: 4, stdout: '', stderr: 'berthctl: lease is bound to another container: 198.18.3.7 is bound to container c1 on node-a; use --force to free it anyway\n' });
});

test('the token file is read, trimmed and sent as a bearer token', async (t) => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'berthctl-run-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 't'), '  s3cret\n');
  writeFileSync(join(dir, 'empty'), '\n');
  const srv = await fake({ 'GET /v1/hosts': [200, { hosts: [] }] });
  t.teardown(() => srv.close());
  t.is((await cli(['hosts', 'ls'], { BERTH_CONTROLLER: srv.url, BERTH_TOKEN_FILE: join(dir, 't') })).code, 0);
  t.is(srv.seen[0].auth, 'Bearer s3cret');
  const r = await cli(['hosts', 'ls', '--token-file', join(dir, 'empty')], { BERTH_CONTROLLER: srv.url });
  t.is(r.code, 2);
  t.regex(r.stderr, /^berthctl: token file is empty: .*empty\n$/);
});

test('a non-JSON error answer is one line coded by its status (502: try again, exit 5)', async (t) => {
  const server = http.createServer((_req, res) => res.writeHead(502).end('<html>bad gateway</html>'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const r = await cli(['pools', 'ls'], { BERTH_CONTROLLER: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  t.is(r.code, 5);
  t.is(r.stderr, 'berthctl: controller answered 502 Bad Gateway: <html>bad gateway</html>\n');
});
