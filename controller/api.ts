/**
 * The controller's JSON HTTP API (routes listed in common/api.ts). Node's
 * http only. Every failure leaves as {error: ErrorBody} with the status from
 * the error table; only Internal errors are logged with a stack.
 */
import * as http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { HistoryQuery, LeaseFilter } from '../common/api';
import { BerthError, castError } from '../common/errors';
import type { Logger } from '../common/log';
import { queryHistory } from './history';
import { declareDead, hostViews } from './hosts';
import { clusterStatus } from './status';
import type { LeaseStore } from './store';

const MAX_BODY = 64 * 1024;
export const VERSION = '0.1.0';

type Handler = (req: Ctx) => Promise<[number, unknown]>;
interface Ctx { params: string[]; query: URLSearchParams; body: () => Promise<any> }

export function createApi(store: LeaseStore, log: Logger, opts: { token?: string; etcdHealthy: () => Promise<boolean> }): http.Server {
  const deps = { etcd: store.etcd, view: store.view, log, now: store.now };
  const routes: [string, RegExp, Handler][] = [
    ['GET', /^\/healthz$/, async () => {
      const etcd = await opts.etcdHealthy();
      return [etcd ? 200 : 503, { ok: etcd, etcd, version: VERSION }];
    }],
    ['POST', /^\/v1\/pools$/, async (c) => [201, await store.createPool(await c.body())]],
    ['GET', /^\/v1\/pools$/, async () => [200, { pools: store.listPools() }]],
    ['GET', /^\/v1\/pools\/([^/]+)$/, async (c) => [200, await store.poolUsage(c.params[0])]],
    ['PATCH', /^\/v1\/pools\/([^/]+)$/, async (c) => [200, await store.updatePool(c.params[0], await c.body())]],
    ['DELETE', /^\/v1\/pools\/([^/]+)$/, async (c) => [200, await store.deletePool(c.params[0], isForce(c.query))]],
    ['POST', /^\/v1\/pools\/([^/]+)\/bind$/, async (c) => {
      const r = await store.bind(c.params[0], await c.body());
      return [r.allocated ? 201 : 200, r];
    }],
    ['POST', /^\/v1\/pools\/([^/]+)\/release$/, async (c) => [200, await store.release(c.params[0], await c.body())]],
    ['POST', /^\/v1\/pools\/([^/]+)\/pin$/, async (c) => [200, await store.pin(c.params[0], await c.body())]],
    ['DELETE', /^\/v1\/pools\/([^/]+)\/leases\/([^/]+)$/, async (c) => {
      return [200, { freed: await store.free(c.params[0], c.params[1], isForce(c.query)) }];
    }],
    ['GET', /^\/v1\/leases$/, async (c) => [200, { leases: await store.listLeases(pick(c.query, ['pool', 'host', 'state', 'identity']) as LeaseFilter) }]],
    ['GET', /^\/v1\/leases\/([^/]+)$/, async (c) => [200, await store.findLease(c.params[0], c.query.get('pool') ?? undefined)]],
    ['GET', /^\/v1\/history$/, async (c) => {
      const q = pick(c.query, ['ip', 'identity', 'at', 'since', 'until']) as HistoryQuery;
      const limit = c.query.get('limit');
      if (limit !== null) q.limit = Number(limit);
      return [200, { events: await queryHistory(store.etcd, q) }];
    }],
    ['GET', /^\/v1\/hosts$/, async () => [200, { hosts: await hostViews(deps) }]],
    ['GET', /^\/v1\/status$/, async () => [200, await clusterStatus(store)]],
    ['DELETE', /^\/v1\/hosts\/([^/]+)$/, async (c) => {
      return [200, await declareDead(deps, c.params[0], { by: 'operator', reason: 'forgotten by an operator', force: isForce(c.query) })];
    }],
  ];

  return http.createServer((req, res) => {
    const started = Date.now();
    const url = new URL(req.url ?? '/', 'http://controller');
    const reply = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      log.debug('request', { method: req.method, path: url.pathname, status, ms: Date.now() - started });
    };
    const fail = (e: unknown) => {
      const err = castError(e);
      if (err.kind === 'Internal') log.error('internal error', { path: url.pathname, error: err.message, stack: err.stack });
      reply(err.httpStatus, { error: err.toBody() });
    };
    try {
      if (opts.token !== undefined && url.pathname !== '/healthz' && !tokenMatches(req.headers.authorization, opts.token)) {
        throw new BerthError('Unauthorized');
      }
      let matchedPath = false;
      for (const [method, re, handler] of routes) {
        const m = re.exec(url.pathname);
        if (!m) continue;
        matchedPath = true;
        if (method !== req.method) continue;
        const params = m.slice(1).map((p) => decodeURIComponent(p));
        handler({ params, query: url.searchParams, body: () => readJson(req) }).then(([s, b]) => reply(s, b), fail);
        return;
      }
      throw matchedPath
        ? new BerthError('InvalidRequest', `${req.method} ${url.pathname}`, 'method not allowed')
        : new BerthError('NotFound', url.pathname);
    } catch (e) {
      fail(e);
    }
  });
}

function isForce(q: URLSearchParams): boolean {
  return ['1', 'true'].includes(q.get('force') ?? '');
}

function pick(q: URLSearchParams, names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) { const v = q.get(n); if (v !== null && v !== '') out[n] = v; }
  return out;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]), b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function readJson(req: http.IncomingMessage): Promise<any> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) { reject(new BerthError('InvalidRequest', `${size} bytes`, 'request body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return reject(new BerthError('InvalidRequest', 'empty body', 'expected a JSON object'));
      try {
        const v = JSON.parse(text);
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        resolve(v);
      } catch (e) {
        reject(new BerthError('Decode', (e as Error).message, 'request body is not a JSON object'));
      }
    });
    req.on('error', (e) => reject(new BerthError('IO', e.message)));
  });
}
