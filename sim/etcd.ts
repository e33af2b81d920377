/**
 * Starts a real etcd on 127.0.0.1 on free ports, with its data in a temp dir,
 * and stops it by PID. Every integration test that needs etcd uses this.
 *
 * startEtcd({ tls: true }) serves TLS only and requires client certificates
 * (--client-cert-auth): a fresh CA, server and client certificate are made
 * with openssl in the data dir (EtcdServer.tls names the files).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { EtcdPolicy } from '../common/etcd-faults';
import { eventually } from './eventually';
import { Pki } from './pki';

export interface EtcdServer {
  endpoint: string;
  /** The same server over a unix socket: reachable from any network namespace. */
  socketEndpoint: string;
  pid: number;
  dataDir: string;
  /** With { tls: true }: the CA that signed the server, and a client certificate it accepts. */
  tls?: EtcdTlsFiles & { otherCa: string };
  client(): Etcd3;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * A throw-away PKI in dir: ca.pem signs server.pem (SAN 127.0.0.1, localhost)
 * and client.pem. Also other-ca.pem, a CA that signed nothing here (for
 * "wrong CA" tests). Keys are EC P-256: quick to make.
 */
export function makeTestPki(dir: string): { ca: string; otherCa: string; server: EtcdTlsFiles; client: EtcdTlsFiles } {
  const pki = new Pki(dir);
  const ca = pki.ca('ca');
  const otherCa = pki.ca('other-ca');
  const server = pki.issue(ca, 'server');
  const client = pki.issue(ca, 'client', { usage: 'client' });
  return { ca: ca.cert, otherCa: otherCa.cert, server: { ca: ca.cert, ...server }, client: { ca: ca.cert, ...client } };
}

export interface EtcdOptions {
  /** Serve TLS with client-certificate auth (a throw-away PKI, makeTestPki). */
  tls?: boolean;
  /** etcd --max-txn-ops (default 128): seeding benches write larger transactions. */
  maxTxnOps?: number;
  /** etcd --quota-backend-bytes (default 2 GiB). */
  quotaBytes?: number;
  /** Ports for the first start-up attempt (tests of start-up itself: a port another process holds). */
  firstPorts?: { client?: number; peer?: number };
}

function extraFlags(o: EtcdOptions): string[] {
  return [
    ...(o.maxTxnOps !== undefined ? ['--max-txn-ops', String(o.maxTxnOps)] : []),
    ...(o.quotaBytes !== undefined ? ['--quota-backend-bytes', String(o.quotaBytes)] : []),
  ];
}

/**
 * Start-up attempts, each on fresh ports. freePort() frees its port before
 * etcd binds it, so a process started meanwhile (another test file's etcd,
 * say) can take it: etcd then exits at once, and the attempt is made again.
 */
const START_ATTEMPTS = 5;

export async function startEtcd(o: EtcdOptions = {}): Promise<EtcdServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-etcd-'));
  // Unique to this server: readiness is asked of the member list, so a probe
  // that reached another etcd on a port taken from under us is never taken for ours.
  const name = `berth-test-${basename(dataDir).replace(/^berth-etcd-/, '')}`;
  const pki = o.tls ? makeTestPki(dataDir) : undefined;
  const creds = pki
    ? { rootCertificate: readFileSync(pki.ca), certChain: readFileSync(pki.client.cert), privateKey: readFileSync(pki.client.key) }
    : undefined;
  const failures: string[] = [];
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const first = attempt === 0 ? o.firstPorts : undefined;
    const clientPort = first?.client ?? await freePort();
    const peerPort = first?.peer ?? await freePort();
    const up = await launch({ o, name, dataDir, pki, creds, clientPort, peerPort });
    if ('server' in up) return up.server;
    failures.push(up.failure);
    // What the failed attempt left (a member dir naming its peer URL, the socket) must not steer the next.
    rmSync(join(dataDir, 'member'), { recursive: true, force: true });
    rmSync(join(dataDir, 'etcd.sock:0'), { force: true });
  }
  rmSync(dataDir, { recursive: true, force: true });
  throw new Error(`etcd did not start in ${START_ATTEMPTS} attempts: ${failures.join(' | ')}`);
}

/**
 * The probe's calls go out once each: the polling is the retry. etcd3's default
 * breaker would stop calling for 5 s after three refused connections, which is
 * what any probe of an etcd still starting meets.
 */
const ONCE = { execute: (fn: (ctx: { signal: AbortSignal }) => unknown) => fn({ signal: new AbortController().signal }) } as unknown as EtcdPolicy;

interface LaunchArgs {
  o: EtcdOptions;
  name: string;
  dataDir: string;
  pki: ReturnType<typeof makeTestPki> | undefined;
  creds: { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer } | undefined;
  clientPort: number;
  peerPort: number;
}

/** One start-up attempt: the server once this very etcd answers, or why it exited first. */
async function launch(a: LaunchArgs): Promise<{ server: EtcdServer } | { failure: string }> {
  const { o, name, dataDir, pki, creds } = a;
  const scheme = pki ? 'https' : 'http';
  const endpoint = `${scheme}://127.0.0.1:${a.clientPort}`;
  const peer = `http://127.0.0.1:${a.peerPort}`;
  const tlsArgs = pki
    ? ['--cert-file', pki.server.cert, '--key-file', pki.server.key, '--trusted-ca-file', pki.ca, '--client-cert-auth']
    : [];
  const child: ChildProcess = spawn('etcd', [
    '--name', name,
    '--data-dir', dataDir,
    // A pathname unix socket is not scoped to a network namespace, so agents
    // inside simulated hosts reach etcd without any route to this loopback.
    // With TLS the socket speaks TLS too (unixs); clients still dial it as
    // unix:// (grpc-js has no unixs scheme) and bring TLS credentials.
    '--listen-client-urls', `${endpoint},${pki ? 'unixs' : 'unix'}://etcd.sock:0`,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `${name}=${peer}`,
    '--log-level', 'error',
    ...tlsArgs,
    ...extraFlags(o),
  ], { stdio: ['ignore', 'ignore', 'pipe'], cwd: dataDir });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  const pid = child.pid;
  if (pid === undefined) throw new Error('etcd did not start (is it installed?)');
  const running = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const probe = new Etcd3({ hosts: endpoint, ...(creds ? { credentials: creds } : {}), faultHandling: { host: () => ONCE, global: ONCE } });
  let ours = false;
  try {
    ours = await eventually(async () => {
      if (!running()) return false;
      const { members } = await probe.cluster.memberList({});
      const names = members.map((m) => m.name);
      if (!names.includes(name)) throw new Error(`${endpoint} answers as ${JSON.stringify(names)}, not ${name}`);
      await probe.get('probe').string();
      return running();
    }, { timeoutMs: 20_000, what: `etcd on ${endpoint}` }).catch(async (e: Error) => {
      if (!running()) return false;
      // Running but never ready: not left behind.
      process.kill(pid, 'SIGKILL');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
      throw new Error(`${e.message}: ${stderr}`);
    });
  } finally {
    probe.close();
  }
  if (!ours) {
    await exited;
    return { failure: `etcd on ${endpoint} (peer ${peer}) exited at start-up: ${stderr.trim().slice(-500)}` };
  }
  const clients: Etcd3[] = [];
  return {
    server: {
      endpoint, pid, dataDir, socketEndpoint: `unix://${join(dataDir, 'etcd.sock:0')}`,
      ...(pki ? { tls: { ...pki.client, otherCa: pki.otherCa } } : {}),
      client() { const c = new Etcd3({ hosts: endpoint, ...(creds ? { credentials: creds } : {}) }); clients.push(c); return c; },
      async stop() {
        for (const c of clients.splice(0)) c.close();
        if (running()) {
          process.kill(pid, 'SIGTERM');
          const timer = setTimeout(() => { if (running()) process.kill(pid, 'SIGKILL'); }, 5000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dataDir, { recursive: true, force: true });
      },
    },
  };
}

export interface EtcdMember {
  name: string;
  endpoint: string;
  pid: number;
  /** Stops this member only (SIGKILL: a crash, as when a leader dies). */
  kill(): Promise<void>;
  running(): boolean;
}

export interface EtcdCluster {
  members: EtcdMember[];
  endpoints: string[];
  /** The member etcd currently reports as leader, asked of a live member. */
  leader(): Promise<EtcdMember>;
  client(): Etcd3;
  stop(): Promise<void>;
}

/**
 * A multi-member etcd on loopback ports, each member a process of its own
 * (killed by PID), for failover measurements (leader loss). Election timing
 * is etcd's default (heartbeat 100 ms, election 1000 ms).
 */
export async function startEtcdCluster(size = 3, o: EtcdOptions = {}): Promise<EtcdCluster> {
  const root = mkdtempSync(join(tmpdir(), 'berth-etcd-cluster-'));
  const specs: { name: string; client: number; peer: number }[] = [];
  for (let i = 0; i < size; i++) specs.push({ name: `m${i}`, client: await freePort(), peer: await freePort() });
  const initial = specs.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');
  // One token for all members: it seeds the cluster id they must agree on.
  const token = `berth-${specs[0].client}`;
  const clients: Etcd3[] = [];
  const members: EtcdMember[] = specs.map((m) => {
    const endpoint = `http://127.0.0.1:${m.client}`;
    const dataDir = join(root, m.name);
    const child = spawn('etcd', [
      '--name', m.name, '--data-dir', dataDir,
      '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
      '--listen-peer-urls', `http://127.0.0.1:${m.peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peer}`,
      '--initial-cluster', initial, '--initial-cluster-state', 'new', '--initial-cluster-token', token,
      '--log-level', 'error', ...extraFlags(o),
    ], { stdio: ['ignore', 'ignore', 'ignore'] });
    if (child.pid === undefined) throw new Error('etcd did not start (is it installed?)');
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const running = () => child.exitCode === null && child.signalCode === null;
    return {
      name: m.name, endpoint, pid: child.pid, running,
      async kill() { if (running()) { process.kill(child.pid as number, 'SIGKILL'); await exited; } },
      async stopGently() {
        if (!running()) return;
        process.kill(child.pid as number, 'SIGTERM');
        const timer = setTimeout(() => { if (running()) process.kill(child.pid as number, 'SIGKILL'); }, 5000);
        await exited;
        clearTimeout(timer);
      },
    } as EtcdMember & { stopGently(): Promise<void> };
  });
  const endpoints = members.map((m) => m.endpoint);
  const probe = new Etcd3({ hosts: endpoints, defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }) });
  try {
    await eventually(async () => { await probe.put('probe').value('1'); }, { timeoutMs: 30_000, what: `etcd cluster on ${endpoints.join(',')}` });
  } finally {
    probe.close();
  }
  const cluster: EtcdCluster = {
    members, endpoints,
    async leader() {
      for (const m of members.filter((x) => x.running())) {
        const c = new Etcd3({ hosts: m.endpoint, defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 1000 }) });
        try {
          const st = await c.maintenance.status();
          const lead = await c.cluster.memberList({});
          const name = lead.members.find((x) => x.ID === st.leader)?.name;
          const found = members.find((x) => x.name === name);
          if (found && found.running()) return found;
        } catch { /* ask the next member */ } finally { c.close(); }
      }
      throw new Error('no member reports a leader');
    },
    client() { const c = new Etcd3({ hosts: endpoints }); clients.push(c); return c; },
    async stop() {
      for (const c of clients.splice(0)) c.close();
      await Promise.all(members.map((m) => (m as EtcdMember & { stopGently(): Promise<void> }).stopGently()));
      rmSync(root, { recursive: true, force: true });
    },
  };
  return cluster;
}
