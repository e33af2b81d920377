/**
 * The controller's JSON HTTP API (routes listed in common/api.ts). Node's
 * http(s) only. Every failure leaves as {error: ErrorBody} with the status
 * from the error table, including what Node's parser rejects; only Internal
 * errors are logged with a stack.
 *
 * A request passes, in order: the target (parsed without throwing), Host
 * (loopback listeners: DNS-rebinding protection), who is calling (client
 * certificate and/or bearer token; /healthz needs neither), the route and
 * method (405 with Allow), the content type of writes (415), and a body read
 * within size, depth and time limits. The checks live in request.ts, the
 * listener policy in listen-policy.ts; docs/operations.md lists the answers.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { MIN_REVISION_HEADER, MIN_REVISION_WAIT_MS, REVISION_HEADER, type HistoryQuery, type LeaseFilter } from '../common/api';
import { BerthError, castError } from '../common/errors';
import type { Logger } from '../common/log';
import { TlsFiles, type TlsMaterial } from '../common/tls';
import { queryHistory } from './history';
import { declareDead, hostViews } from './hosts';
import {
  answerClientError, answerConnect, bearerToken, checkHost, decodeSegment, isJsonContentType, parseJsonObject, parseTarget, readBody,
} from './request';
import { clusterStatus } from './status';
import type { LeaseStore } from './store';

export const VERSION = '0.1.0';

type Handler = (req: Ctx) => Promise<[number, unknown]>;
interface Ctx { params: string[]; query: URLSearchParams; body: () => Promise<any> }

export interface ApiOptions {
  token?: string;
  etcdHealthy: () => Promise<boolean>;
  /** Serve HTTPS with these files (re-read when they change); clientCertRequired: mTLS. */
  tls?: { files: TlsFiles; clientCertRequired: boolean };
  /** Host header values accepted (loopback listeners); undefined: any. Read per request, set once the port is known. */
  allowedHosts?: () => ReadonlySet<string> | undefined;
  /** Body deadline (default DEFAULT_BODY_TIMEOUT_MS). */
  bodyTimeoutMs?: number;
}

export type ApiServer = http.Server | https.Server;

export function createApi(store: LeaseStore, log: Logger, opts: ApiOptions): ApiServer {
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
    ['GET', /^\/v1\/leases$/, async (c) => {
      const f = pick(c.query, ['pool', 'host', 'state', 'identity', 'continue']) as LeaseFilter;
      const limit = c.query.get('limit');
      if (limit !== null) f.limit = Number(limit);
      return [200, new RawJson(await store.listLeasesJson(f))];
    }],
    ['GET', /^\/v1\/leases\/([^/]+)$/, async (c) => [200, await store.findLease(c.params[0], c.query.get('pool') ?? undefined)]],
    ['GET', /^\/v1\/history$/, async (c) => {
      const q = pick(c.query, ['ip', 'identity', 'at', 'since', 'until', 'continue']) as HistoryQuery;
      const limit = c.query.get('limit');
      if (limit !== null) q.limit = Number(limit);
      return [200, await queryHistory(store.etcd, q)];
    }],
    ['GET', /^\/v1\/hosts$/, async () => [200, { hosts: await hostViews(deps) }]],
    ['GET', /^\/v1\/status$/, async () => [200, await clusterStatus(store)]],
    ['DELETE', /^\/v1\/hosts\/([^/]+)$/, async (c) => {
      return [200, await declareDead(deps, c.params[0], { by: 'operator', reason: 'forgotten by an operator', force: isForce(c.query) })];
    }],
  ];

  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = Date.now();
    let path = '';
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      if (res.headersSent || res.destroyed) return;
      const text = body instanceof RawJson ? body.text : JSON.stringify(body);
      res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      log.debug('request', { method: req.method, path: path.slice(0, 200), status, ms: Date.now() - started });
    };
    const fail = (e: unknown, headers: Record<string, string> = {}) => {
      const err = castError(e);
      if (err.kind === 'Internal') log.error('internal error', { path: path.slice(0, 200), error: err.message, stack: err.stack });
      // A body that never finished leaves the stream mid-request: the connection can't carry another one.
      if (err.kind === 'RequestTimeout') headers = { ...headers, connection: 'close' };
      reply(err.httpStatus, { error: err.toBody() }, headers);
    };
    try {
      const target = parseTarget(req.url);
      path = target.path;
      // RFC 9112 3.2: HTTP/1.1 requires Host. Node checks it too, but answers with an empty body; this one is JSON.
      if (req.headers.host === undefined && req.httpVersion === '1.1') throw new BerthError('InvalidRequest', 'no Host header', 'an HTTP/1.1 request needs a Host header');
      const hosts = opts.allowedHosts?.();
      if (hosts) checkHost(req.headers.host, hosts);
      if (path !== '/healthz') authorize(req, opts);
      const matched = routes.filter(([, re]) => re.test(path));
      if (matched.length === 0) throw new BerthError('NotFound', path.slice(0, 200));
      const route = matched.find(([method]) => method === req.method);
      if (!route) {
        const allow = [...new Set(matched.map(([method]) => method))].join(', ');
        return fail(new BerthError('MethodNotAllowed', `${req.method} ${path.slice(0, 200)}; allowed: ${allow}`), { allow });
      }
      const [method, re, handler] = route;
      if (BODY_METHODS.has(method) && !isJsonContentType(req.headers['content-type'])) {
        throw new BerthError('UnsupportedMediaType', `Content-Type: ${(req.headers['content-type'] ?? '(none)').slice(0, 100)}`);
      }
      const params = re.exec(path)!.slice(1).map(decodeSegment);
      const body = () => readBody(req, { timeoutMs: opts.bodyTimeoutMs }).then(parseJsonObject);
      // /healthz is unauthenticated: it never waits for anything.
      (path === '/healthz' ? Promise.resolve() : readYourWrites(req, deps.view))
        .then(() => handler({ params, query: target.query, body }))
        .then(([s, b]) => reply(s, b, { [REVISION_HEADER]: String(deps.view.revision) }), fail);
    } catch (e) {
      fail(e);
    }
  };
  return createServer(handle, opts.tls, log);
}

/**
 * A read that names the newest revision its client wrote waits (bounded)
 * for this replica's view to reach it (common/api.ts "Reading your own
 * writes"). A malformed value is ignored, not refused: it only ever makes
 * a read wait.
 */
export async function readYourWrites(req: http.IncomingMessage, view: { revision: bigint; caughtUpWithin(rev: bigint, ms: number): Promise<boolean> }): Promise<void> {
  const v = req.method === 'GET' ? req.headers[MIN_REVISION_HEADER] : undefined;
  if (typeof v !== 'string' || !/^\d{1,19}$/.test(v)) return;
  const rev = BigInt(v);
  // None for revisions no write could have answered with yet.
  if (rev <= view.revision || rev - view.revision > 1_000_000n) return;
  await view.caughtUpWithin(rev, MIN_REVISION_WAIT_MS);
}

/** Methods whose requests carry a JSON body; they must say so (415 otherwise), which also keeps browser form posts out. */
const BODY_METHODS = new Set(['POST', 'PATCH']);

/** Token and client certificate, each required when configured (a unix socket has no certificate: its mode is its guard). */
function authorize(req: http.IncomingMessage, opts: ApiOptions): void {
  const socket = req.socket as TLSSocket;
  if (opts.tls?.clientCertRequired && !socket.authorized) {
    const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
    throw presented
      ? new BerthError('Unauthorized', String(socket.authorizationError), 'client certificate rejected')
      : new BerthError('Unauthorized', 'none presented (pass --cert and --key)', 'client certificate required');
  }
  if (opts.token !== undefined && !tokenMatches(req.headers.authorization, opts.token)) {
    throw new BerthError('Unauthorized');
  }
}

function isForce(q: URLSearchParams): boolean {
  return ['1', 'true'].includes(q.get('force') ?? '');
}

/** A reply body already serialised (lease pages pass etcd's JSON through). */
class RawJson {
  constructor(readonly text: string) {}
}

function pick(q: URLSearchParams, names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) { const v = q.get(n); if (v !== null && v !== '') out[n] = v; }
  return out;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = bearerToken(header);
  if (given === undefined) return false;
  const a = Buffer.from(given), b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Plain HTTP, or HTTPS whose certificate follows its files: before each new
 * connection is handed to TLS, the files' identity (inode, size, mtime) is
 * compared with what is loaded, and a change installs a new secure context
 * (server.setSecureContext), so a rotated certificate is served from the next
 * connection on, without a restart. A file that fails to load is logged once
 * per change and the previous certificate stays in service.
 */
function createServer(handle: http.RequestListener, tls: ApiOptions['tls'], log: Logger): ApiServer {
  let server: ApiServer;
  if (!tls) {
    server = http.createServer({ requireHostHeader: false }, handle);
  } else {
    const options = (m: TlsMaterial): https.ServerOptions => ({
      cert: m.cert, key: m.key, ...(m.ca ? { ca: m.ca } : {}),
      // Verified, but not enforced by TLS: the request handler answers a JSON 401 naming what is wrong.
      requestCert: tls.clientCertRequired, rejectUnauthorized: false,
    });
    const s = https.createServer({ ...options(tls.files.load()), requireHostHeader: false }, handle);
    s.prependListener('connection', () => {
      const next = tls.files.reload((e) => log.error('TLS files changed but cannot be loaded; still serving the previous certificate', { error: e.message, details: e.details }));
      if (!next) return;
      s.setSecureContext(options(next));
      log.info('TLS certificate reloaded', { files: tls.files.paths() });
    });
    s.on('tlsClientError', (e: NodeJS.ErrnoException, socket: TLSSocket) => {
      log.warn('TLS handshake failed', { remote: socket.remoteAddress, error: e.message, code: e.code });
    });
    server = s;
  }
  server.on('clientError', answerClientError);
  server.on('connect', answerConnect);
  return server;
}
