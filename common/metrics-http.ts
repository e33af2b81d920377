/**
 * The metrics listener both daemons run beside their main work
 * (`--metrics-listen`): Prometheus text at /metrics, liveness at /healthz,
 * readiness at /readyz. It is a separate listener from the controller API on
 * purpose: scrapers and kubelet probes need no token, and the API never has
 * to be reachable from wherever Prometheus runs.
 *
 *   GET /metrics  200, text/plain; version=0.0.4 (prom-client's registry)
 *   GET /healthz  200 {"ok":true}: the process is alive and its event loop answers
 *   GET /readyz   200 {"ready":true,"checks":{...}} when every check holds,
 *                 503 with the same body otherwise (checks name what is missing)
 *
 * Anything else is a JSON 404, or 405 with `Allow: GET, HEAD`. The listen
 * address is host:port (port 0 picks one; loopback by default) or
 * unix:///path (mode 0600): the sim cluster uses a unix socket so tests in
 * the root namespace reach an agent inside its host namespace without any
 * network traffic.
 */
import { chmodSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { BerthError, castError } from './errors';
import type { Logger } from './log';

/** Each check's name and whether it holds; ready when all hold. */
export type ReadinessChecks = () => Promise<Record<string, boolean>> | Record<string, boolean>;

export interface MetricsServer {
  /** http://host:port or unix:///path */
  url: string;
  close(): Promise<void>;
}

export function createMetricsHandler(registry: Registry, readiness: ReadinessChecks, log: Logger): http.RequestListener {
  const send = (res: http.ServerResponse, status: number, body: string, type = 'application/json', extra: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body);
  };
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const known = path === '/metrics' || path === '/healthz' || path === '/readyz';
    if (!known) return send(res, 404, JSON.stringify({ error: { kind: 'NotFound', details: path } }));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, JSON.stringify({ error: { kind: 'InvalidRequest', details: `${req.method} ${path}` } }), 'application/json', { allow: 'GET, HEAD' });
    }
    const answer = async () => {
      if (path === '/healthz') return send(res, 200, JSON.stringify({ ok: true }));
      if (path === '/readyz') {
        const checks = await readiness();
        const ready = Object.values(checks).every(Boolean);
        return send(res, ready ? 200 : 503, JSON.stringify({ ready, checks }));
      }
      send(res, 200, await registry.metrics(), registry.contentType);
    };
    answer().catch((e) => {
      const err = castError(e);
      log.warn('metrics request failed', { path, error: err.message });
      if (!res.headersSent) send(res, 500, JSON.stringify({ error: err.toBody() }));
      else res.destroy();
    });
  };
}

/** Listens on host:port or unix:///path and serves createMetricsHandler. */
export async function startMetricsServer(listen: string, registry: Registry, readiness: ReadinessChecks, log: Logger): Promise<MetricsServer> {
  const server = http.createServer(createMetricsHandler(registry, readiness, log));
  server.keepAliveTimeout = 65_000; // longer than Prometheus' idle timeout: scrapes reuse connections
  let url: string;
  try {
    if (listen.startsWith('unix://')) {
      const path = listen.slice('unix://'.length);
      if (path === '') throw new Error('empty socket path');
      rmSync(path, { force: true });
      await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(path, () => resolve()); });
      chmodSync(path, 0o600);
      url = listen;
    } else {
      const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
      if (!m || Number(m[2]) > 65535) throw new Error('expected host:port or unix:///path');
      await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(Number(m[2]), m[1], () => resolve()); });
      const a = server.address() as AddressInfo;
      url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    }
  } catch (e) {
    server.close();
    throw new BerthError('InvalidConfig', `${listen}: ${(e as Error).message}`, 'cannot listen for metrics');
  }
  log.info('metrics listening', { url });
  return {
    url,
    close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}
