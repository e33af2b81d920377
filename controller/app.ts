/**
 * Wires one controller replica: etcd client, watch-fed view, lease store,
 * elected expirer and the HTTP API. Used by the bin, the tests and the demo.
 */
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { openEtcd, type EtcdConnection } from '../common/etcd';
import { createLogger, type Logger } from '../common/log';
import { createApi } from './api';
import { Expirer } from './expirer';
import { LeaseStore } from './store';
import { ClusterView } from './view';

export interface ControllerOptions {
  etcd: EtcdConnection;
  /** host:port; port 0 picks a free one. */
  listen: string;
  token?: string;
  replicaId?: string;
  sweepMs?: number;
  historyMaxAgeMs?: number;
  historyMaxPerAddress?: number;
  batchMax?: number;
  now?: () => number;
  log?: Logger;
}

export interface RunningController {
  url: string;
  store: LeaseStore;
  expirer: Expirer;
  stop(): Promise<void>;
}

export async function startController(o: ControllerOptions): Promise<RunningController> {
  const replicaId = o.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const log = (o.log ?? createLogger({ component: 'controller' })).child({ replica: replicaId });
  const etcd = openEtcd(o.etcd);
  const view = new ClusterView(etcd, log);
  await view.start();
  const now = o.now ?? Date.now;
  const store = new LeaseStore(etcd, view, log, { batchMax: o.batchMax, now });
  const expirer = new Expirer(etcd, log, {
    replicaId,
    sweepMs: o.sweepMs ?? 1000,
    historyMaxAgeMs: o.historyMaxAgeMs ?? 7 * 24 * 3600 * 1000,
    historyMaxPerAddress: o.historyMaxPerAddress ?? 200,
    now,
  });
  expirer.start();
  const etcdHealthy = async () => {
    try { await etcd.maintenance.status(); return true; } catch { return false; }
  };
  const server = createApi(store, log, { token: o.token, etcdHealthy });
  const [host, portText] = splitHostPort(o.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info('controller listening', { url });
  return {
    url, store, expirer,
    async stop() {
      await new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); });
      await expirer.stop();
      await view.close();
      etcd.close();
    },
  };
}

export function splitHostPort(listen: string): [string, string] {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new Error(`listen address must be host:port, got "${listen}"`);
  return [m[1], m[2]];
}
