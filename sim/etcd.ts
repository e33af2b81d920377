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
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
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
}

function extraFlags(o: EtcdOptions): string[] {
  return [
    ...(o.maxTxnOps !== undefined ? ['--max-txn-ops', String(o.maxTxnOps)] : []),
    ...(o.quotaBytes !== undefined ? ['--quota-backend-bytes', String(o.quotaBytes)] : []),
  ];
}

export async function startEtcd(o: EtcdOptions = {}): Promise<EtcdServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const pki = o.tls ? makeTestPki(dataDir) : undefined;
  const scheme = pki ? 'https' : 'http';
  const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
  const tlsArgs = pki
    ? ['--cert-file', pki.server.cert, '--key-file', pki.server.key, '--trusted-ca-file', pki.ca, '--client-cert-auth']
    : [];
  const creds = pki
    ? { rootCertificate: readFileSync(pki.ca), certChain: readFileSync(pki.client.cert), privateKey: readFileSync(pki.client.key) }
    : undefined;
  const child: ChildProcess = spawn('etcd', [
    '--name', 'berth-test',
    '--data-dir', dataDir,
    // A pathname unix socket is not scoped to a network namespace, so agents
    // inside simulated hosts reach etcd without any route to this loopback.
    // With TLS the socket speaks TLS too (unixs); clients still dial it as
    // unix:// (grpc-js has no unixs scheme) and bring TLS credentials.
    '--listen-client-urls', `${endpoint},${pki ? 'unixs' : 'unix'}://etcd.sock:0`,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `berth-test=http://127.0.0.1:${peerPort}`,
    '--log-level', 'error',
    ...tlsArgs,
    ...extraFlags(o),
  ], { stdio: ['ignore', 'ignore', 'pipe'], cwd: dataDir });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  const pid = child.pid;
  if (pid === undefined) throw new Error('etcd did not start (is it installed?)');
  const clients: Etcd3[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const probe = new Etcd3({ hosts: endpoint, ...(creds ? { credentials: creds } : {}) });
  try {
    await eventually(async () => { await probe.get('probe').string(); }, { timeoutMs: 20_000, what: `etcd on ${endpoint}: ${stderr}` });
  } finally {
    probe.close();
  }
  return {
    endpoint, pid, dataDir, socketEndpoint: `unix://${join(dataDir, 'etcd.sock:0')}`,
    ...(pki ? { tls: { ...pki.client, otherCa: pki.otherCa } } : {}),
    client() { const c = new Etcd3({ hosts: endpoint, ...(creds ? { credentials: creds } : {}) }); clients.push(c); return c; },
    async stop() {
      for (const c of clients.splice(0)) c.close();
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => { if (child.exitCode === null) process.kill(pid, 'SIGKILL'); }, 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
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
