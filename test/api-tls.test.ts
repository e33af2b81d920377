/**
 * The controller's API over TLS with client certificates, with certificates
 * made by openssl in the test (sim/pki.ts): berthctl and the agent's client
 * against a wrong CA, an expired certificate and a missing client
 * certificate (one clear error each), rotation of the server's and the
 * client's certificate without a restart, and the daemons' TLS flags.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { ControllerClient } from '../common/controller-client';
import { isBerthError, type BerthError } from '../common/errors';
import { silentLogger } from '../common/log';
import { startController, type RunningController } from '../controller/app';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { Pki, type Issued } from '../sim/pki';

const DIST = join(__dirname, '..');
let etcd: EtcdServer;
let ctl: RunningController;
let pki: Pki;
let ca: Issued, otherCa: Issued, server: Issued, client: Issued, strangerClient: Issued, expiredClient: Issued;
let served: Issued;
let sock: string;

test.before(async () => {
  pki = new Pki();
  ca = pki.ca('ca');
  otherCa = pki.ca('other-ca');
  server = pki.issue(ca, 'server');
  client = pki.issue(ca, 'client', { usage: 'client' });
  strangerClient = pki.issue(otherCa, 'stranger', { usage: 'client' });
  expiredClient = pki.issue(ca, 'expired-client', { usage: 'client', days: -1 });
  // The files the controller serves: a copy, so rotation can rewrite them.
  served = pki.issue(ca, 'served');
  sock = join(pki.dir, 'api.sock');
  etcd = await startEtcd();
  ctl = await startController({
    etcd: { endpoints: [etcd.endpoint] }, listen: ['127.0.0.1:0', `unix://${sock}`], log: silentLogger,
    tls: { certFile: served.cert, keyFile: served.key, clientCaFile: ca.cert },
  });
});

test.after.always(async () => {
  await ctl?.stop();
  await etcd?.stop();
  pki?.close();
});

interface Result { code: number | null; stdout: string; stderr: string }

function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(DIST, bin), ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const tlsArgs = (c: { ca?: string; cert?: Issued }) => [...(c.ca ? ['--ca', c.ca] : []), ...(c.cert ? ['--cert', c.cert.cert, '--key', c.cert.key] : [])];

/** berthctl fails with `code` and exactly one stderr line, which is returned. */
async function ctlFails(t: ExecutionContext, args: string[], code: number, env: Record<string, string> = {}): Promise<string> {
  const r = await run('controller/cli/main.js', ['--controller', ctl.url, ...args], env);
  t.is(r.code, code, r.stderr);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^berthctl: [^\n]+\n$/, `one line: ${JSON.stringify(r.stderr)}`);
  return r.stderr.trimEnd();
}

test.serial('berthctl with the CA and a client certificate is served over https', async (t) => {
  t.regex(ctl.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const r = await run('controller/cli/main.js', ['--controller', ctl.url, ...tlsArgs({ ca: ca.cert, cert: client }), 'pools', 'ls', '--json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { pools: [] });
  const env = { BERTH_CA_FILE: ca.cert, BERTH_CERT_FILE: client.cert, BERTH_KEY_FILE: client.key };
  t.is((await run('controller/cli/main.js', ['--controller', ctl.url, 'hosts', 'ls'], env)).code, 0, 'the same from the environment');
});

test.serial('a wrong CA: one line naming the untrusted certificate and --ca, exit 6', async (t) => {
  const line = await ctlFails(t, ['pools', 'ls', ...tlsArgs({ ca: otherCa.cert, cert: client })], 6);
  t.regex(line, /^berthctl: controller certificate not trusted: https:\/\/127\.0\.0\.1:\d+: .*\((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)\); check --ca$/);
});

test.serial('a missing client certificate: one line, exit 6', async (t) => {
  const line = await ctlFails(t, ['pools', 'ls', ...tlsArgs({ ca: ca.cert })], 6);
  t.is(line, 'berthctl: client certificate required: none presented (pass --cert and --key)');
});

test.serial('a client certificate from another CA, or an expired one: rejected with the reason, exit 6', async (t) => {
  t.regex(await ctlFails(t, ['pools', 'ls', ...tlsArgs({ ca: ca.cert, cert: strangerClient })], 6),
    /^berthctl: client certificate rejected: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/);
  t.is(await ctlFails(t, ['pools', 'ls', ...tlsArgs({ ca: ca.cert, cert: expiredClient })], 6),
    'berthctl: client certificate rejected: CERT_HAS_EXPIRED');
});

test.serial('TLS files that cannot be read or do not match are one line naming the flag', async (t) => {
  t.regex(await ctlFails(t, ['pools', 'ls', '--ca', join(pki.dir, 'nope.pem')], 2), /^berthctl: cannot read --ca file: .*nope\.pem: no such file$/);
  t.regex(await ctlFails(t, ['pools', 'ls', '--ca', ca.cert, '--cert', client.cert], 2), /^berthctl: --cert needs --key: --cert /);
  t.regex(await ctlFails(t, ['pools', 'ls', '--ca', ca.cert, '--cert', client.cert, '--key', server.key], 2), /^berthctl: --key does not match --cert: /);
  t.regex(await ctlFails(t, ['pools', 'ls', '--ca', client.key], 2), /^berthctl: --ca is not a PEM certificate bundle: /);
  const r = await run('controller/cli/main.js', ['--controller', `unix://${sock}`, '--ca', ca.cert, 'pools', 'ls']);
  t.is(r.stderr, `berthctl: --ca/--cert/--key need an https:// controller URL: unix://${sock}\n`);
});

test.serial('the unix socket stays plain HTTP, guarded by its mode: no client certificate needed', async (t) => {
  const c = new ControllerClient({ url: `unix://${sock}` });
  t.teardown(() => c.close());
  t.deepEqual(await c.hosts(), { hosts: [] });
});

/** The certificate a fresh TLS connection to the controller is served. */
function servedCert(): Promise<string> {
  const { port } = new URL(ctl.url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false, cert: readFileSync(client.cert), key: readFileSync(client.key) }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}
const fingerprint = (f: Issued) => new X509Certificate(readFileSync(f.cert)).fingerprint256;

test.serial('a rotated server certificate is served to the next connection, without a restart', async (t) => {
  const original = pki.issue(ca, 'served-original');
  pki.rotate(original, served);
  t.is(await servedCert(), fingerprint(served));
  const next = pki.issue(ca, 'served-next');
  pki.rotate(served, next);
  t.is(await servedCert(), fingerprint(next), 'the next connection gets the new certificate');

  // Rotated to an expired one: berthctl says so, in one line.
  const expired = pki.issue(ca, 'served-expired', { days: -1 });
  pki.rotate(served, expired);
  t.regex(await ctlFails(t, ['pools', 'ls', ...tlsArgs({ ca: ca.cert, cert: client })], 6),
    /^berthctl: controller certificate not trusted: https:\/\/127\.0\.0\.1:\d+: certificate has expired \(CERT_HAS_EXPIRED\); check --ca$/);

  // A half-written file is not loaded: the previous certificate stays in service.
  const { writeFileSync } = await import('node:fs');
  writeFileSync(served.cert, '-----BEGIN CERTIFICATE-----\nMIIB');
  t.is(await servedCert(), fingerprint(expired));
  pki.rotate(served, original);
  t.is(await servedCert(), fingerprint(original));
  const r = await run('controller/cli/main.js', ['--controller', ctl.url, ...tlsArgs({ ca: ca.cert, cert: client }), 'pools', 'ls']);
  t.is(r.code, 0, r.stderr);
});

test.serial('the agent\'s client: typed errors for each TLS failure, and a rotated client certificate is presented on the next call', async (t) => {
  const wrongCa = new ControllerClient({ url: ctl.url, tls: { caFile: otherCa.cert, certFile: client.cert, keyFile: client.key } });
  const noCert = new ControllerClient({ url: ctl.url, tls: { caFile: ca.cert } });
  const mine = pki.issue(ca, 'agent-client', { usage: 'client' });
  const original = pki.issue(ca, 'agent-client-original', { usage: 'client' });
  pki.rotate(original, mine);
  const good = new ControllerClient({ url: ctl.url, tls: { caFile: ca.cert, certFile: mine.cert, keyFile: mine.key } });
  t.teardown(() => { wrongCa.close(); noCert.close(); good.close(); });

  const e1 = await t.throwsAsync(wrongCa.hosts()) as BerthError;
  t.true(isBerthError(e1));
  t.like(e1, { kind: 'TlsFailed', message: 'controller certificate not trusted' });
  t.regex(e1.details ?? '', /(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN).*check --ca/);
  t.is(e1.cniCode, 154);
  const e2 = await t.throwsAsync(noCert.hosts()) as BerthError;
  t.like(e2, { kind: 'Unauthorized', message: 'client certificate required' });

  t.deepEqual(await good.hosts(), { hosts: [] });
  pki.rotate(mine, strangerClient);
  const e3 = await t.throwsAsync(good.hosts()) as BerthError;
  t.like(e3, { kind: 'Unauthorized', message: 'client certificate rejected' }, 'the rotated (foreign) certificate was presented');
  pki.rotate(mine, original);
  t.deepEqual(await good.hosts(), { hosts: [] }, 'and the next rotation back is picked up too');
});

/** Starts the controller bin, waits for `until` in its log (then stops it) or for its exit, and returns its stderr lines. */
async function controllerBin(t: ExecutionContext, args: string[], until: RegExp | 'exit'): Promise<{ lines: string[]; code: number | null }> {
  const child: ChildProcess = spawn(process.execPath, [join(DIST, 'controller/main.js'), '--etcd-endpoints', etcd.endpoint, '--metrics-listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL'); });
  let stderr = '';
  let code: number | null = null;
  let exited = false;
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.once('close', (c) => { code = c; exited = true; });
  await eventually(() => { if (!exited && (until === 'exit' || !until.test(stderr))) throw new Error(`waiting for ${until}: ${stderr}`); }, { timeoutMs: 20_000, what: String(until) });
  if (!exited) { process.kill(child.pid!, 'SIGTERM'); await eventually(() => { if (!exited) throw new Error('still running'); }); }
  return { lines: stderr.trimEnd().split('\n'), code };
}

test.serial('berth-controller refuses an unguarded non-loopback listener in one line; --insecure-listen logs a JSON warning', async (t) => {
  const refused = await controllerBin(t, ['--listen', '0.0.0.0:0'], 'exit');
  t.is(refused.code, 1);
  t.deepEqual(refused.lines, ['berth-controller: refusing a non-loopback listener with neither --token-file nor --client-ca (pass --insecure-listen to allow it): --listen 0.0.0.0:0']);

  const warned = await controllerBin(t, ['--listen', '0.0.0.0:0', '--insecure-listen'], /controller listening/);
  const logged = warned.lines.map((l) => JSON.parse(l));
  t.like(logged.find((l) => l.level === 'warn'), { msg: 'listening on a non-loopback address with no authentication (--insecure-listen): anyone who reaches it can change leases', listen: '0.0.0.0:0' });

  const guarded = await controllerBin(t, ['--listen', '0.0.0.0:0', '--tls-cert', server.cert, '--tls-key', server.key, '--client-ca', ca.cert], /controller listening/);
  for (const l of guarded.lines) t.notThrows(() => JSON.parse(l), `every stderr line is JSON: ${l}`);
  t.false(guarded.lines.some((l) => JSON.parse(l).level === 'warn'));
});

test.serial('the daemons\' TLS and etcd flags: bad combinations and unreadable files are one labelled line', async (t) => {
  const one = async (bin: string, args: string[], want: RegExp) => {
    const r = await run(bin, args);
    t.not(r.code, 0, `${bin} ${args.join(' ')}`);
    t.regex(r.stderr.trimEnd(), want, `${bin} ${args.join(' ')}`);
    t.is(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
  };
  const c = 'controller/main.js';
  await one(c, ['--etcd-cert', client.cert, '--etcd-key', client.key], /^berth-controller: --etcd-cert and --etcd-key need --etcd-ca /);
  await one(c, ['--etcd-ca', ca.cert, '--etcd-cert', client.cert], /^berth-controller: --etcd-cert needs --etcd-key: /);
  await one(c, ['--etcd-ca', ca.cert, '--etcd-cert', client.cert, '--etcd-key', join(pki.dir, 'gone.pem')], /^berth-controller: cannot read --etcd-key file: .*gone\.pem: no such file$/);
  await one(c, ['--tls-cert', join(pki.dir, 'gone.pem'), '--tls-key', server.key], /^berth-controller: cannot read --tls-cert file: .*gone\.pem: no such file$/);
  await one(c, ['--tls-cert', server.cert, '--tls-key', client.key], /^berth-controller: --tls-key does not match --tls-cert: /);
  await one(c, ['--client-ca', ca.cert], /^berth-controller: --client-ca needs --tls-cert and --tls-key: /);
  await one(c, ['--token-file', join(pki.dir, 'gone')], /^berth-controller: cannot read --token-file file: .*gone: no such file$/);
  const a = 'agent/main.js';
  const agentBase = ['--underlay-ip', '198.19.0.9', '--etcd-endpoints', etcd.endpoint];
  await one(a, [...agentBase, '--etcd-key', client.key, '--etcd-cert', client.cert], /^berth-agent: --etcd-cert and --etcd-key need --etcd-ca /);
  await one(a, [...agentBase, '--controller', ctl.url, '--ca', join(pki.dir, 'gone.pem')], /^berth-agent: cannot read --ca file: .*gone\.pem: no such file$/);
  await one(a, [...agentBase, '--controller', 'http://127.0.0.1:7480', '--ca', ca.cert], /^berth-agent: --ca\/--cert\/--key need an https:\/\/ controller URL: /);
});
