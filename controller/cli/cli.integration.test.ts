/**
 * berthctl end to end: a real etcd, a live controller, and the built CLI
 * exec'd as a process exactly as an operator runs it. Every command, its
 * --json form, and the failure contract (one stderr line, table exit code).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LeaseEvent, LeaseView, PoolUsage } from '../../common/api';
import { ControllerClient } from '../../common/controller-client';
import { keys } from '../../common/keys';
import { silentLogger } from '../../common/log';
import { freePort, startEtcd, type EtcdServer } from '../../sim/etcd';
import { seedLeases } from '../../sim/seed';
import { startController, type RunningController } from '../app';

const MAIN = join(__dirname, 'main.js');
const POOL = 'cli';
const CIDR = '198.18.40.0/24';

let etcd: EtcdServer;
/**
 * The token-protected controller gets its own etcd: two replicas on one etcd
 * campaign for the expirer, and an Expirer elected after its stop() leaks its
 * sweep interval, so the worker never exits (reported to the lead).
 */
let guardedEtcd: EtcdServer;
let ctl: RunningController;
let guarded: RunningController;
let api: ControllerClient;
let tmp: string;

interface Result { code: number | null; stdout: string; stderr: string }

function berthctl(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      env: { PATH: process.env.PATH ?? '', BERTH_CONTROLLER: ctl.url, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Success: exit 0, nothing on stderr. */
async function ok(t: ExecutionContext, args: string[], env?: Record<string, string>): Promise<string> {
  const r = await berthctl(args, env);
  t.is(r.code, 0, `berthctl ${args.join(' ')}: ${r.stderr}`);
  t.is(r.stderr, '', `berthctl ${args.join(' ')}`);
  return r.stdout;
}

async function okJson<T>(t: ExecutionContext, args: string[], env?: Record<string, string>): Promise<T> {
  return JSON.parse(await ok(t, [...args, '--json'], env)) as T;
}

/** Failure: the given exit code, nothing on stdout, exactly one line on stderr. */
async function fails(t: ExecutionContext, args: string[], code: number, env?: Record<string, string>): Promise<string> {
  const r = await berthctl(args, env);
  t.is(r.code, code, `berthctl ${args.join(' ')}: ${r.stderr}`);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^berthctl: [^\n]+\n$/, `one line: ${JSON.stringify(r.stderr)}`);
  return r.stderr.trimEnd();
}

test.before(async () => {
  [etcd, guardedEtcd] = await Promise.all([startEtcd(), startEtcd()]);
  const base = { listen: '127.0.0.1:0', sweepMs: 200, log: silentLogger };
  ctl = await startController({ ...base, etcd: { endpoints: [etcd.endpoint] } });
  guarded = await startController({ ...base, etcd: { endpoints: [guardedEtcd.endpoint] }, token: 'sekret' });
  api = new ControllerClient({ url: ctl.url });
  tmp = mkdtempSync(join(tmpdir(), 'berthctl-'));
});

test.after.always(async () => {
  api?.close();
  await guarded?.stop();
  await ctl?.stop();
  await Promise.all([etcd?.stop(), guardedEtcd?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test.serial('pools create, ls and show report settings and utilisation', async (t) => {
  const created = await ok(t, ['pools', 'create', POOL, '--cidr', CIDR, '--hold', '1h', '--reserve', '198.18.40.250,198.18.40.251']);
  t.regex(created, /^created pool cli 198\.18\.40\.0\/24: gateway 198\.18\.40\.1, 251 leasable addresses, hold 3600s\n$/);
  const other = await okJson<PoolUsage>(t, ['pools', 'create', 'cli-b', '--cidr', '198.18.41.0/24', '--gateway', '198.18.41.254', '--hold', '90']);
  t.is(other.gateway, '198.18.41.254');
  t.is(other.holdSeconds, 90);

  const table = await ok(t, ['pools', 'ls']);
  t.regex(table.split('\n')[0], /^NAME\s+CIDR\s+GATEWAY\s+SIZE\s+BOUND\s+HELD\s+PINNED\s+FREE\s+USED\s+HOLD$/);
  t.regex(table, /\ncli\s+198\.18\.40\.0\/24\s+198\.18\.40\.1\s+251\s+0\s+0\s+0\s+251\s+0%\s+1h\n/);
  const listed = await okJson<{ pools: PoolUsage[] }>(t, ['pools', 'ls']);
  t.deepEqual(listed.pools.map((p) => p.name).sort(), ['cli', 'cli-b']);

  const shown = await ok(t, ['pools', 'show', POOL]);
  t.regex(shown, /Reserved:\s+198\.18\.40\.250, 198\.18\.40\.251/);
  t.regex(shown, /Size:\s+251 leasable addresses/);
  t.regex(shown, /Used:\s+0% \(0 of 251\)/);

  t.regex(await fails(t, ['pools', 'create', POOL, '--cidr', CIDR], 4), /^berthctl: pool already exists: cli$/);
  t.regex(await fails(t, ['pools', 'show', 'nope'], 3), /^berthctl: no such pool: nope$/);
});

let ip: string;
const WEB = 'k8s/shop/web-0';

test.serial('leases ls, show by IP and by identity, with --json', async (t) => {
  const b = await api.bind(POOL, { identity: WEB, host: 'node-a', containerId: 'c0ffee0000000000000001', ifName: 'eth0' });
  ip = b.lease.ip;

  const table = await ok(t, ['leases', 'ls']);
  t.regex(table.split('\n')[0], /^IP\s+POOL\s+IDENTITY\s+STATE\s+HOST\s+CONTAINER\s+SINCE\s+PINNED\s+EXPIRES$/);
  t.regex(table, new RegExp(`\\n${ip.replace(/\./g, '\\.')}\\s+cli\\s+k8s/shop/web-0\\s+bound\\s+node-a\\s+c0ffee000000\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\s+no\\s+-\\n`));
  const filtered = await okJson<{ leases: LeaseView[] }>(t, ['leases', 'ls', '--pool', POOL, '--host', 'node-a', '--state', 'bound', '--identity', WEB]);
  t.deepEqual(filtered.leases.map((l) => l.ip), [ip]);
  t.deepEqual((await okJson<{ leases: LeaseView[] }>(t, ['leases', 'ls', '--state', 'held'])).leases, []);

  const byIp = await ok(t, ['leases', 'show', ip]);
  t.regex(byIp, /Identity:\s+k8s\/shop\/web-0\n/);
  t.regex(byIp, /State:\s+bound\n/);
  t.regex(byIp, /Host:\s+node-a\n/);
  t.regex(byIp, /Container:\s+c0ffee0000000000000001\n/);
  t.regex(byIp, /Since:\s+\S+Z \(\d+s ago\)\n/);
  t.regex(byIp, new RegExp(`Fencing revision:\\s+${b.lease.revision}\\n`));
  const byIpJson = await okJson<LeaseView>(t, ['leases', 'show', ip]);
  t.is(byIpJson.identity, WEB);
  t.is(byIpJson.revision, b.lease.revision);

  const byId = await ok(t, ['leases', 'show', WEB, '--pool', POOL]);
  t.regex(byId, new RegExp(`IP:\\s+${ip.replace(/\./g, '\\.')}\\n`));
  t.is((await okJson<LeaseView>(t, ['leases', 'show', WEB])).ip, ip);
});

test.serial('leases history lists events and --at answers who had the address then', async (t) => {
  await api.release(POOL, { identity: WEB, containerId: 'c0ffee0000000000000001' });
  await api.bind(POOL, { identity: WEB, host: 'node-b', containerId: 'c0ffee0000000000000002', ifName: 'eth0' });

  const table = await ok(t, ['leases', 'history', ip]);
  t.regex(table.split('\n')[0], /^TIME\s+EVENT\s+IP\s+POOL\s+IDENTITY\s+HOST\s+CONTAINER\s+STATE\s+BY$/);
  t.regex(table, /allocated .*node-a\s+c0ffee000000\s+free->bound/);
  t.regex(table, /released .*node-a\s+c0ffee000000\s+bound->held/);
  t.regex(table, /moved .*node-b\s+c0ffee000000\s+held->bound/);

  const { events } = await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', ip]);
  t.deepEqual(events.map((e) => e.kind), ['allocated', 'released', 'moved']);
  t.deepEqual((await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', WEB])).events.map((e) => e.kind), ['allocated', 'released', 'moved']);
  t.deepEqual((await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', ip, '--limit', '1'])).events.map((e) => e.kind), ['moved']);
  const window = await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', ip, '--since', events[1].at, '--until', events[1].at]);
  t.deepEqual(window.events.map((e) => e.kind), ['released']);

  const atFirst = await ok(t, ['leases', 'history', ip, '--at', events[0].at]);
  t.regex(atFirst, /^198\.18\.40\.\d+ at \S+Z: bound to k8s\/shop\/web-0 on host node-a, container c0ffee0000000000000001 \(pool cli; allocated \S+Z\)\n$/);
  t.regex(await ok(t, ['leases', 'history', ip, '--at', events[1].at]), /: held for k8s\/shop\/web-0, no container attached/);
  t.regex(await ok(t, ['leases', 'history', ip, '--at', 'now']), /: bound to k8s\/shop\/web-0 on host node-b, container c0ffee0000000000000002/);
  t.regex(await ok(t, ['leases', 'history', ip, '--at', '2000-01-01 14:02']), /: no lease recorded at or before that time\n$/);
  const atJson = await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', ip, '--at', '1s ago']);
  t.true(atJson.events.length <= 1);

  t.regex(await fails(t, ['leases', 'history', ip, '--at', 'teatime'], 2), /^berthctl: option '--at <time>' argument 'teatime' is invalid/);
});

test.serial('leases pin reserves an address before its identity exists; release frees it', async (t) => {
  // An address no earlier test happened to allocate (they take random free ones).
  const taken = new Set((await api.leases({ pool: POOL })).leases.map((l) => l.ip));
  const pin = Array.from({ length: 100 }, (_, i) => `198.18.40.${100 + i}`).find((a) => !taken.has(a))!;
  const pinned = await ok(t, ['leases', 'pin', 'k8s/shop/db-0', '--pool', POOL, '--ip', pin]);
  t.is(pinned, `pinned k8s/shop/db-0 to ${pin} in pool cli (held, never expires)\n`);
  const again = await okJson<LeaseView>(t, ['leases', 'pin', 'k8s/shop/db-0', '--pool', POOL]);
  t.is(again.ip, pin);
  t.true(again.pinned);
  const list = await okJson<{ leases: LeaseView[] }>(t, ['leases', 'ls', '--state', 'pinned']);
  t.deepEqual(list.leases.map((l) => l.identity), ['k8s/shop/db-0']);
  const shown = await ok(t, ['leases', 'show', 'k8s/shop/db-0']);
  t.regex(shown, /Pinned:\s+yes/);
  t.regex(shown, /Held until:\s+never/);
  t.regex(await ok(t, ['pools', 'show', POOL]), /Pinned:\s+1 /);

  const conflict = await fails(t, ['leases', 'pin', 'k8s/shop/other', '--pool', POOL, '--ip', ip], 4);
  t.regex(conflict, /^berthctl: address is leased to another identity: /);

  t.is(await ok(t, ['leases', 'release', pin, '--pool', POOL]), `freed ${pin} in pool cli (was held, pinned for k8s/shop/db-0)\n`);
  const refused = await fails(t, ['leases', 'release', ip, '--pool', POOL], 4);
  t.regex(refused, /use --force/);
  const freed = await okJson<{ freed: LeaseView }>(t, ['leases', 'release', ip, '--pool', POOL, '--force']);
  t.is(freed.freed.identity, WEB);
  t.is(await fails(t, ['leases', 'show', ip], 3), `berthctl: no such lease: ${ip}`);
  t.regex(await ok(t, ['leases', 'history', ip]), /\n\S+\s+freed\s/);
});

test.serial('hosts ls prints a table (empty without agents) and JSON', async (t) => {
  const table = await ok(t, ['hosts', 'ls']);
  t.is(table.split('\n')[0].replace(/\s+/g, ' '), 'NAME UNDERLAY VTEP MAC VNI POOL LEASES REGISTERED LIVENESS');
  t.true(Array.isArray((await okJson<{ hosts: unknown[] }>(t, ['hosts', 'ls'])).hosts));
});

test.serial('pools set changes the hold; pools delete is refused while in use, then deletes; bad pools are one line', async (t) => {
  await ok(t, ['pools', 'create', 'cli-del', '--cidr', '198.18.42.0/24', '--hold-policy', 'explicit-only']);
  t.regex((await ok(t, ['pools', 'show', 'cli-del'])), /Hold:\s+1h \(3600s\), explicit identities only/);
  t.is(await ok(t, ['pools', 'set', 'cli-del', '--hold', '10m', '--hold-policy', 'all']), 'pool cli-del: hold 600s\n');
  t.like(await okJson<PoolUsage>(t, ['pools', 'show', 'cli-del']), { holdSeconds: 600, holdPolicy: 'all' });
  t.regex(await fails(t, ['pools', 'set', 'cli-del'], 2), /^berthctl: nothing to change/);
  t.regex(await fails(t, ['pools', 'set', 'cli-del', '--hold-policy', 'some'], 2), /argument 'some' is invalid/);
  const l = await api.bind('cli-del', { identity: 'k8s/shop/del-0', host: 'node-a', containerId: 'c1', ifName: 'eth0' });
  t.is(await fails(t, ['pools', 'delete', 'cli-del'], 4),
    `berthctl: pool has bound or pinned leases: 1 bound, 0 pinned: ${l.lease.ip} (k8s/shop/del-0); use --force to delete it anyway`);
  t.is(await ok(t, ['pools', 'delete', 'cli-del', '--force']), 'deleted pool cli-del 198.18.42.0/24 and 1 lease(s)\n');
  t.is(await fails(t, ['pools', 'show', 'cli-del'], 3), 'berthctl: no such pool: cli-del');
  t.is(await fails(t, ['pools', 'delete', 'cli-del'], 3), 'berthctl: no such pool: cli-del');
  t.is(await fails(t, ['pools', 'create', 'cli-over', '--cidr', '198.18.40.128/25'], 4),
    'berthctl: pool overlaps another pool or a host address: 198.18.40.128/25 overlaps pool cli (198.18.40.0/24)');
  t.is(await fails(t, ['pools', 'create', 'cli-31', '--cidr', '198.18.43.0/31'], 2),
    'berthctl: prefix /31 is too long: a pool needs at least a /30 (network, gateway, one address, broadcast): 198.18.43.0/31');
});

test.serial('hosts forget refuses a live host, frees an absent one\'s leases (pins kept) and names an unknown one', async (t) => {
  // Registered as an agent does: a persistent record and an alive key on an etcd lease.
  const etc = etcd.client();
  const host = 'node-gone';
  await etc.put(keys.host(host)).value(JSON.stringify({ name: host, underlayIp: '198.19.0.31', vtepMac: '0e:be:00:00:00:31', vni: 4242, pool: POOL, registeredAt: new Date().toISOString() }));
  const alive = etc.lease(60);
  await alive.put(keys.alive(host)).value('{}');
  const web = await api.bind(POOL, { identity: 'k8s/shop/gone-web', host, containerId: 'cg1', ifName: 'eth0' });
  await api.pin(POOL, { identity: 'k8s/shop/gone-db' });
  const db = await api.bind(POOL, { identity: 'k8s/shop/gone-db', host, containerId: 'cg2', ifName: 'eth0' });
  // A container identity has no hold: its address is freed, not held, as its own release would.
  const anon = await api.bind(POOL, { identity: 'container/cg3', source: 'container', host, containerId: 'cg3', ifName: 'eth0' });
  t.regex(await ok(t, ['hosts', 'ls']), /node-gone .* 3 .* alive\n/);
  t.regex(await fails(t, ['hosts', 'forget', host], 4), /^berthctl: host is alive: node-gone: .*--force/);
  await alive.revoke();
  t.regex(await ok(t, ['hosts', 'ls']), /node-gone .* absent/);
  t.is(await ok(t, ['hosts', 'forget', host]), 'forgot host node-gone: 2 bound lease(s) now held (1 pinned, kept pinned), 1 freed (no hold); their identities can bind on another host\n');
  t.is(await fails(t, ['leases', 'show', anon.lease.ip], 3), `berthctl: no such lease: ${anon.lease.ip}`);
  t.regex(await ok(t, ['leases', 'history', anon.lease.ip]), /\n\S+\s+orphaned\s.*bound->free\s+operator\n$/);
  t.like(await api.lease(web.lease.ip), { state: 'held', pinned: false });
  const pinned = await api.lease(db.lease.ip);
  t.like(pinned, { state: 'held', pinned: true });
  t.is(pinned.heldUntil, undefined);
  t.regex(await ok(t, ['leases', 'history', web.lease.ip]), /\n\S+\s+orphaned\s.*bound->held\s+operator\n$/);
  t.is(await fails(t, ['hosts', 'forget', host], 3), 'berthctl: no such host: node-gone');
  t.is(await fails(t, ['hosts', 'forget', 'nope'], 3), 'berthctl: no such host: nope');
});

test('usage errors are one line and exit 2', async (t) => {
  t.is(await fails(t, ['leases', 'ls', '--bogus'], 2), "berthctl: unknown option '--bogus'");
  t.is(await fails(t, ['leases', 'frobnicate'], 2), "berthctl: unknown command 'frobnicate'");
  t.regex(await fails(t, ['leases'], 2), /^berthctl: leases needs a subcommand/);
  t.regex(await fails(t, ['leases', 'pin', 'x'], 2), /required option '--pool <pool>' not specified/);
  t.regex(await fails(t, ['leases', 'show', 'not-an-ip', '--pool', 'nope'], 3), /^berthctl: no such pool: nope$/);
});

test('an unknown lease is one line and exit 3', async (t) => {
  t.is(await fails(t, ['leases', 'show', '198.18.9.9'], 3), 'berthctl: no such lease: 198.18.9.9');
  t.is(await fails(t, ['leases', 'show', 'k8s/nobody/here'], 3), 'berthctl: no such lease: identity k8s/nobody/here');
});

test('an unreachable controller is one line and exit 5', async (t) => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const line = await fails(t, ['pools', 'ls'], 5, { BERTH_CONTROLLER: url });
  t.true(line.startsWith(`berthctl: controller unreachable at ${url} (`), line);
  t.true((await fails(t, ['--controller', url, 'leases', 'ls'], 5)).startsWith(`berthctl: controller unreachable at ${url}`));
});

test('a token-protected controller needs --token-file', async (t) => {
  const env = { BERTH_CONTROLLER: guarded.url };
  t.is(await fails(t, ['pools', 'ls'], 6, env), 'berthctl: missing or invalid bearer token (pass --token-file or set BERTH_TOKEN_FILE)');
  const good = join(tmp, 'token');
  writeFileSync(good, 'sekret\n');
  const bad = join(tmp, 'bad-token');
  writeFileSync(bad, 'guess\n');
  t.is(await fails(t, ['pools', 'ls', '--token-file', bad], 6, env), 'berthctl: missing or invalid bearer token');
  t.regex(await ok(t, ['pools', 'ls', '--token-file', good], env), /^NAME\s+CIDR/);
  t.regex(await ok(t, ['--token-file', good, 'hosts', 'ls'], env), /^NAME\s+UNDERLAY/);
  t.regex(await ok(t, ['leases', 'ls'], { ...env, BERTH_TOKEN_FILE: good }), /^IP\s+POOL/);
  t.regex(await fails(t, ['pools', 'ls', '--token-file', join(tmp, 'missing')], 2, env), /^berthctl: cannot read token file: .*ENOENT$/);
});

test('leases ls and history page with --limit and --continue, and --all follows every page', async (t) => {
  await seedLeases(etcd.client(), { pool: 'pg', cidr: '198.18.42.0/24', count: 25, hosts: ['node-p'] });
  // Offsets 2..26: the seed skips the network address and the gateway.
  const want = Array.from({ length: 25 }, (_, i) => `198.18.42.${i + 2}`).sort();
  const pages: LeaseView[][] = [];
  let token: string | undefined;
  do {
    const page = await okJson<{ leases: LeaseView[]; continue?: string }>(t, ['leases', 'ls', '--pool', 'pg', '--limit', '10', ...(token ? ['--continue', token] : [])]);
    pages.push(page.leases);
    token = page.continue;
  } while (token !== undefined && pages.length < 10);
  t.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
  t.deepEqual(pages.flat().map((l) => l.ip).sort(), want, 'every lease exactly once');

  const onePage = await ok(t, ['leases', 'ls', '--pool', 'pg', '--limit', '10']);
  t.is(onePage.split('\n').filter((l) => l.startsWith('198.18.42.')).length, 10);
  t.regex(onePage, /\nmore: pass --continue \S+\n$/);
  const all = await okJson<{ leases: LeaseView[] }>(t, ['leases', 'ls', '--pool', 'pg', '--limit', '7', '--all']);
  t.deepEqual(all.leases.map((l) => l.ip).sort(), want);
  t.is((await ok(t, ['leases', 'ls', '--pool', 'pg'])).split('\n').filter((l) => l.startsWith('198.18.42.')).length, 25);
  t.deepEqual((await okJson<{ leases: LeaseView[] }>(t, ['leases', 'ls', '--host', 'node-p', '--limit', '100'])).leases.length, 25);
  t.regex(await fails(t, ['leases', 'ls', '--pool', 'pg', '--continue', 'not-a-token'], 2), /^berthctl: continue token is not one this API issued: continue$/);

  // Five events for one identity: bind, then release and rebind twice.
  const who = 'k8s/pg/paged-0';
  await api.bind('pg', { identity: who, host: 'node-p', containerId: 'p0', ifName: 'eth0' });
  for (const c of ['p1', 'p2']) {
    await api.release('pg', { identity: who, containerId: c === 'p1' ? 'p0' : 'p1' });
    await api.bind('pg', { identity: who, host: 'node-p', containerId: c, ifName: 'eth0' });
  }
  const full = (await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', who])).events.map((e) => e.kind);
  t.deepEqual(full, ['allocated', 'released', 'bound', 'released', 'bound']);
  const newest = await okJson<{ events: LeaseEvent[]; continue?: string }>(t, ['leases', 'history', who, '--limit', '2']);
  t.deepEqual(newest.events.map((e) => e.kind), ['released', 'bound']);
  t.truthy(newest.continue);
  const older = await okJson<{ events: LeaseEvent[]; continue?: string }>(t, ['leases', 'history', who, '--limit', '2', '--continue', newest.continue as string]);
  t.deepEqual(older.events.map((e) => e.kind), ['released', 'bound']);
  t.not(older.events[1].containerId, newest.events[1].containerId);
  t.deepEqual((await okJson<{ events: LeaseEvent[] }>(t, ['leases', 'history', who, '--limit', '2', '--all'])).events.map((e) => e.kind), full);
  t.regex(await ok(t, ['leases', 'history', who, '--limit', '2']), /\nmore: pass --continue \S+\n$/);
});
