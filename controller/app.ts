/**
 * Wires one controller replica: etcd client, watch-fed view, lease store,
 * elected expirer, elected host reaper and the HTTP API. Used by the bin, the tests and the demo.
 */
import { chmodSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { openEtcd, type EtcdConnection } from '../common/etcd';
import { createLogger, type Logger } from '../common/log';
import { TlsFiles } from '../common/tls';
import { startMetricsServer, type MetricsServer } from '../common/metrics-http';
import { createApi, type ApiServer } from './api';
import { Expirer } from './expirer';
import { DEFAULT_HOST_DEAD_AFTER_SECONDS, HostReaper } from './host-reaper';
import { checkListeners, splitHostPort } from './listen-policy';
import { isLoopbackHost, loopbackHostNames } from './request';
import { ControllerMetrics } from './metrics';
import { LeaseStore } from './store';
import { ClusterView } from './view';

export interface ControllerOptions {
  etcd: EtcdConnection;
  /** host:port (port 0 picks a free one), or unix:///path; the first is `url`. */
  listen: string | string[];
  token?: string;
  /**
   * Serve HTTPS on TCP listeners (unix sockets stay plain HTTP: their mode is
   * their guard). clientCaFile: require client certificates signed by it (mTLS).
   * The files are re-read when they change (api.ts).
   */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** Allow a non-loopback TCP listener with neither token nor mTLS (logged as a warning). */
  insecureListen?: boolean;
  /** Deadline for a request body to arrive in full (default 10 s): 408 after it. */
  bodyTimeoutMs?: number;
  replicaId?: string;
  sweepMs?: number;
  historyMaxAgeMs?: number;
  historyMaxPerAddress?: number;
  batchMax?: number;
  /** A host whose alive key stays absent this long is declared dead (controller/host-reaper.ts). */
  hostDeadAfterSeconds?: number;
  /** How often the elected host reaper checks liveness. */
  hostCheckMs?: number;
  now?: () => number;
  log?: Logger;
  /** host:port or unix:///path for /metrics, /healthz and /readyz (common/metrics-http.ts); none when absent. */
  metricsListen?: string;
}

export interface RunningController {
  url: string;
  /** Every address served, in the order of `listen`. */
  urls: string[];
  store: LeaseStore;
  expirer: Expirer;
  reaper: HostReaper;
  /** The metrics listener's URL, when metricsListen was given. */
  metricsUrl?: string;
  stop(): Promise<void>;
}

export async function startController(o: ControllerOptions): Promise<RunningController> {
  const listens = Array.isArray(o.listen) ? o.listen : [o.listen];
  const listenWarnings = checkListeners(listens, {
    token: o.token !== undefined, tls: o.tls !== undefined, mtls: o.tls?.clientCaFile !== undefined, insecureListen: o.insecureListen === true,
  });
  const tlsFiles = o.tls && new TlsFiles({
    cert: { path: o.tls.certFile, flag: '--tls-cert' }, key: { path: o.tls.keyFile, flag: '--tls-key' },
    ...(o.tls.clientCaFile ? { ca: { path: o.tls.clientCaFile, flag: '--client-ca' } } : {}),
  });
  tlsFiles?.load();
  const replicaId = o.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const log = (o.log ?? createLogger({ component: 'controller' })).child({ replica: replicaId });
  const etcd = openEtcd(o.etcd);
  const view = new ClusterView(etcd, log);
  const etcdHealthy = async () => {
    try { await etcd.maintenance.status(); return true; } catch { return false; }
  };
  // Metrics first, so /readyz answers 503 while the view lists.
  const metrics = o.metricsListen !== undefined ? new ControllerMetrics() : undefined;
  let metricsServer: MetricsServer | undefined;
  if (metrics) metricsServer = await startMetricsServer(o.metricsListen!, metrics.registry, async () => ({ etcd: await etcdHealthy(), view: view.synced }), log);
  try { await view.start(); } catch (e) { await metricsServer?.close(); throw e; }
  const now = o.now ?? Date.now;
  const store = new LeaseStore(etcd, view, log, { batchMax: o.batchMax, now });
  const expirer = new Expirer(etcd, log, {
    replicaId,
    sweepMs: o.sweepMs ?? 1000,
    historyMaxAgeMs: o.historyMaxAgeMs ?? 7 * 24 * 3600 * 1000,
    historyMaxPerAddress: o.historyMaxPerAddress ?? 200,
    now,
    view,
    ...(metrics ? { onPass: (r: { ok: boolean; freed: number }) => metrics.expirerPass(r) } : {}),
  });
  expirer.start();
  const deadAfterMs = (o.hostDeadAfterSeconds ?? DEFAULT_HOST_DEAD_AFTER_SECONDS) * 1000;
  const reaper = new HostReaper(etcd, view, log, {
    replicaId, deadAfterMs, checkMs: o.hostCheckMs ?? Math.min(5000, Math.max(100, Math.floor(deadAfterMs / 10))), now,
  });
  reaper.start();
  for (const w of listenWarnings) log.warn(w.msg, { listen: w.listen });
  if (metrics) {
    metrics.observe({ etcd, view, store, isLeader: () => expirer.isLeader });
    metrics.instrument(store);
  }
  const servers: ApiServer[] = [];
  const urls: string[] = [];
  for (const listen of listens) {
    const unix = listen.startsWith('unix://');
    const tls = !unix && tlsFiles ? { files: tlsFiles, clientCertRequired: o.tls?.clientCaFile !== undefined } : undefined;
    // A loopback listener accepts no Host at all until its port is known (port 0).
    let allowedHosts: ReadonlySet<string> | undefined = !unix && isLoopbackHost(splitHostPort(listen)[0]) ? new Set() : undefined;
    const server = createApi(store, log, { token: o.token, etcdHealthy, tls, bodyTimeoutMs: o.bodyTimeoutMs, allowedHosts: () => allowedHosts });
    servers.push(server);
    urls.push(await listenOn(server, listen, tls !== undefined));
    const addr = server.address();
    if (addr !== null && typeof addr === 'object' && isLoopbackHost(addr.address)) allowedHosts = loopbackHostNames(addr.address, addr.port, tls !== undefined);
  }
  const url = urls[0];
  log.info('controller listening', { urls, tls: tlsFiles !== undefined, mtls: o.tls?.clientCaFile !== undefined, token: o.token !== undefined });
  return {
    url, urls, store, expirer, reaper, ...(metricsServer ? { metricsUrl: metricsServer.url } : {}),
    async stop() {
      await Promise.all(servers.map((server) => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); })));
      await metricsServer?.close();
      metrics?.close({ etcd });
      await reaper.stop();
      await expirer.stop();
      await view.close();
      etcd.close();
    },
  };
}

async function listenOn(server: ApiServer, listen: string, tls: boolean): Promise<string> {
  if (listen.startsWith('unix://')) {
    const path = listen.slice('unix://'.length);
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(path, () => resolve()); });
    chmodSync(path, 0o600);
    return listen;
  }
  const [host, portText] = splitHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(portText), host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return `${tls ? 'https' : 'http'}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
}

export { splitHostPort };
