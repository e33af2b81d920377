/**
 * Starts a real etcd on 127.0.0.1 on free ports, with its data in a temp dir,
 * and stops it by PID. Every integration test that needs etcd uses this.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { eventually } from './eventually';

export interface EtcdServer {
  endpoint: string;
  /** The same server over a unix socket: reachable from any network namespace. */
  socketEndpoint: string;
  pid: number;
  dataDir: string;
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

export async function startEtcd(): Promise<EtcdServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const child: ChildProcess = spawn('etcd', [
    '--name', 'berth-test',
    '--data-dir', dataDir,
    // A pathname unix socket is not scoped to a network namespace, so agents
    // inside simulated hosts reach etcd without any route to this loopback.
    '--listen-client-urls', `${endpoint},unix://etcd.sock:0`,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `berth-test=http://127.0.0.1:${peerPort}`,
    '--log-level', 'error',
  ], { stdio: ['ignore', 'ignore', 'pipe'], cwd: dataDir });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  const pid = child.pid;
  if (pid === undefined) throw new Error('etcd did not start (is it installed?)');
  const clients: Etcd3[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const probe = new Etcd3({ hosts: endpoint });
  try {
    await eventually(async () => { await probe.get('probe').string(); }, { timeoutMs: 20_000, what: `etcd on ${endpoint}: ${stderr}` });
  } finally {
    probe.close();
  }
  return {
    endpoint, pid, dataDir, socketEndpoint: `unix://${join(dataDir, 'etcd.sock:0')}`,
    client() { const c = new Etcd3({ hosts: endpoint }); clients.push(c); return c; },
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
