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

export async function startEtcd(o: { tls?: boolean } = {}): Promise<EtcdServer> {
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
