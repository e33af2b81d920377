/**
 * A small typed client of the controller's HTTP API, used by the agent and
 * by berthctl. Node's http only: no framework, and every failure comes back
 * as a BerthError (connection failures are TryAgainLater).
 *
 * Several endpoints (replicas of one controller, all on the same etcd): a
 * call goes to the current one, and moves on to the next only when that one
 * could not answer for the cluster: the connection failed or timed out, or
 * it answered 5xx StoreUnavailable (its etcd is cut off) or a non-JSON 5xx
 * (a proxy in front of a dead replica). Any other answer, 4xx included, is
 * the answer: another replica would say the same. A replica that answered
 * becomes the current one, so calls stick to a healthy replica. Each call
 * tries every endpoint at most once. Bind and release are safe to resend to
 * another replica: bind is get-or-bind and release is fenced by container.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { MIN_REVISION_HEADER, REVISION_HEADER, type ClusterStatus } from './api';
import type {
  BindRequest, BindResponse, CreatePool, DeletePoolResponse, ForgetResponse, Health, HistoryPage, HistoryQuery, HostView, LeaseFilter, LeasePage, LeaseView,
  PinRequest, PoolUsage, ReleaseRequest, ReleaseResponse, UpdatePool,
} from './api';
import { BerthError, fromBody, isErrorKind, type ErrorKind } from './errors';
import { TlsFiles, checkPair } from './tls';

export interface ClientOptions {
  /** http(s)://host:port, or unix:///path/to/controller.sock; a comma list or an array names several replicas. */
  url: string | string[];
  token?: string;
  timeoutMs?: number;
  /**
   * For https:// endpoints: verify the controller against caFile (instead of
   * the system roots) and present certFile/keyFile as a client certificate
   * (mTLS). The files are re-read when they change on disk.
   */
  tls?: ClientTlsFiles;
  /** Called when calls move to another replica because `from` failed with `why`. */
  onFailover?: (e: { from: string; to: string; why: string }) => void;
}

/** The client's TLS files and the flags that named them (for errors): berthctl and the agent both use --ca, --cert, --key. */
export interface ClientTlsFiles { caFile?: string; certFile?: string; keyFile?: string }

export function clientTlsFiles(f: ClientTlsFiles): TlsFiles | undefined {
  const file = (path: string | undefined, flag: string) => (path ? { path, flag } : undefined);
  const set = { ca: file(f.caFile, '--ca'), cert: file(f.certFile, '--cert'), key: file(f.keyFile, '--key') };
  checkPair(set.cert, set.key);
  if (!set.ca && !set.cert) return undefined;
  const files = new TlsFiles(set);
  files.load();
  return files;
}

/** Loads and checks the client's TLS files for these URLs: one-line InvalidConfig errors for a missing or bad file, or TLS files without an https:// URL. */
export function checkClientTls(url: string | string[], f: ClientTlsFiles | undefined): TlsFiles | undefined {
  const files = f ? clientTlsFiles(f) : undefined;
  if (files && !controllerUrls(url).some((u) => /^https:\/\//i.test(u))) {
    throw new BerthError('InvalidConfig', controllerUrls(url).join(','), '--ca/--cert/--key need an https:// controller URL');
  }
  return files;
}

interface Endpoint {
  base: URL;
  agent: http.Agent;
  socketPath: string | undefined;
  where: string;
}

/** Splits a --controller value: a comma list, or several values. */
export function controllerUrls(url: string | string[]): string[] {
  const urls = (Array.isArray(url) ? url : [url]).flatMap((u) => u.split(',')).map((u) => u.trim()).filter(Boolean);
  if (urls.length === 0) throw new BerthError('InvalidConfig', 'controller URL: empty', 'no controller URL');
  return urls;
}

function endpoint(url: string): Endpoint {
  let base: URL;
  let socketPath: string | undefined;
  if (url.startsWith('unix://')) {
    socketPath = url.slice('unix://'.length);
    base = new URL('http://controller/');
  } else {
    base = new URL(url.endsWith('/') ? url : `${url}/`);
  }
  const Agent = base.protocol === 'https:' ? https.Agent : http.Agent;
  return { base, socketPath, agent: new Agent({ keepAlive: true, maxSockets: 256 }), where: socketPath ?? base.origin };
}

/** Marks a failure that another replica may not have: the call moves on to the next endpoint. */
const FAILOVER = Symbol('failover');
type Failover = BerthError & { [FAILOVER]?: true };
const failover = (e: BerthError): BerthError => Object.assign(e, { [FAILOVER]: true as const });

export class ControllerClient {
  private readonly endpoints: Endpoint[];
  /** The replica calls go to first: the last one that answered. */
  private current = 0;
  private readonly tls: TlsFiles | undefined;
  constructor(private readonly opts: ClientOptions) {
    this.endpoints = controllerUrls(opts.url).map(endpoint);
    this.tls = checkClientTls(opts.url, opts.tls);
  }

  /** The endpoint calls go to first (for logs and tests). */
  get currentUrl(): string {
    return this.urlOf(this.current);
  }

  private urlOf(i: number): string {
    const e = this.endpoints[i];
    return e.socketPath !== undefined ? `unix://${e.socketPath}` : e.base.origin;
  }

  health(): Promise<Health> { return this.call('GET', 'healthz'); }
  createPool(p: CreatePool): Promise<PoolUsage> { return this.call('POST', 'v1/pools', p); }
  pools(): Promise<{ pools: PoolUsage[] }> { return this.call('GET', 'v1/pools'); }
  pool(name: string): Promise<PoolUsage> { return this.call('GET', `v1/pools/${enc(name)}`); }
  updatePool(name: string, u: UpdatePool): Promise<PoolUsage> { return this.call('PATCH', `v1/pools/${enc(name)}`, u); }
  deletePool(name: string, force = false): Promise<DeletePoolResponse> {
    return this.call('DELETE', `v1/pools/${enc(name)}${force ? '?force=1' : ''}`);
  }
  bind(pool: string, r: BindRequest): Promise<BindResponse> { return this.call('POST', `v1/pools/${enc(pool)}/bind`, r); }
  release(pool: string, r: ReleaseRequest): Promise<ReleaseResponse> { return this.call('POST', `v1/pools/${enc(pool)}/release`, r); }
  pin(pool: string, r: PinRequest): Promise<LeaseView> { return this.call('POST', `v1/pools/${enc(pool)}/pin`, r); }
  free(pool: string, ip: string, force = false): Promise<{ freed: LeaseView }> {
    return this.call('DELETE', `v1/pools/${enc(pool)}/leases/${enc(ip)}${force ? '?force=1' : ''}`);
  }
  leases(f: LeaseFilter = {}): Promise<LeasePage> { return this.call('GET', `v1/leases${query(f)}`); }
  lease(ip: string, pool?: string): Promise<LeaseView> { return this.call('GET', `v1/leases/${enc(ip)}${query({ pool })}`); }
  history(q: HistoryQuery): Promise<HistoryPage> { return this.call('GET', `v1/history${query(q)}`); }
  hosts(): Promise<{ hosts: HostView[] }> { return this.call('GET', 'v1/hosts'); }
  status(): Promise<ClusterStatus> { return this.call('GET', 'v1/status'); }
  forgetHost(host: string, force = false): Promise<ForgetResponse> {
    return this.call('DELETE', `v1/hosts/${enc(host)}${force ? '?force=1' : ''}`);
  }

  close(): void { for (const e of this.endpoints) e.agent.destroy(); }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const start = this.current;
    let last: BerthError | undefined;
    // Reads see this client's own writes: a replica answers a read only once
    // its view has caught up with the newest revision this client was told
    // about (a CHECK right after its ADD, on any replica).
    const extra: Record<string, string> = method === 'GET' && this.seen > 0n ? { [MIN_REVISION_HEADER]: String(this.seen) } : {};
    for (let i = 0; i < this.endpoints.length; i++) {
      const at = (start + i) % this.endpoints.length;
      try {
        const r = await this.callOne<T>(this.endpoints[at], method, path, body, extra);
        this.settle(at, last);
        if (method !== 'GET') this.note(r);
        return r;
      } catch (e) {
        const err = e as Failover;
        if (!err[FAILOVER]) {
          this.settle(at, last);
          throw err;
        }
        last = err;
      }
    }
    throw last!;
  }

  /** The newest revision a write of this client answered with. */
  private seen = 0n;

  /** A replica answered a read at revision v after waiting: never wait for more than it can show (etcd restored to an older revision). */
  private lowerTo(v: string | string[] | undefined): void {
    if (typeof v === 'string' && /^\d{1,20}$/.test(v) && BigInt(v) < this.seen) this.seen = BigInt(v);
  }

  private note(r: unknown): void {
    const o = r as { revision?: unknown; lease?: { revision?: unknown }; freed?: { revision?: unknown } } | undefined;
    for (const v of [o?.revision, o?.lease?.revision, o?.freed?.revision]) this.raiseTo(v);
  }

  /**
   * A write answered: its body's revisions, and the replica's view revision
   * in the header (which covers writes whose body names none: pools, host
   * forget, free, answered once the view has them).
   */
  private raiseTo(v: unknown): void {
    if (typeof v === 'string' && /^\d{1,20}$/.test(v) && BigInt(v) > this.seen) this.seen = BigInt(v);
  }

  /** Replica `at` answered: calls stick to it from now on. */
  private settle(at: number, failed: BerthError | undefined): void {
    if (at === this.current) return;
    const from = this.urlOf(this.current);
    this.current = at;
    this.opts.onFailover?.({ from, to: this.urlOf(at), why: failed ? `${failed.message}: ${failed.details ?? ''}` : '' });
  }

  private callOne<T>(ep: Endpoint, method: string, path: string, body?: unknown, extra: Record<string, string> = {}, retried = false): Promise<T> {
    const url = new URL(path, ep.base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json', ...extra };
    if (payload) { headers['content-type'] = 'application/json'; headers['content-length'] = String(payload.length); }
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    const secure = url.protocol === 'https:' && ep.socketPath === undefined;
    const mod = secure ? https : http;
    // Per-request TLS material: https.Agent pools sockets by it, so a rotated certificate gets fresh connections.
    const tls = secure && this.tls ? this.tls.current() : {};
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(url, { method, headers, agent: ep.agent, socketPath: ep.socketPath, timeout: this.opts.timeoutMs ?? 10_000, ...tls }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 500;
          let parsed: unknown;
          try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = undefined; }
          if (status >= 400) {
            const body = (parsed as { error?: { code?: unknown } } | undefined)?.error;
            if (body && isErrorKind(body.code)) {
              const err = fromBody(body);
              return reject(status >= 500 && err.kind === 'StoreUnavailable' ? failover(err) : err);
            }
            // Not an error body of ours (a proxy, Node's parser, an empty 431): the status says what kind it is.
            const err = statusError(status, res.statusMessage, text);
            return reject(status >= 500 ? failover(err) : err);
          }
          if (parsed === undefined && text !== '') {
            return reject(new BerthError('Internal', `${status} ${text.slice(0, 200)}`, 'controller sent a non-JSON reply'));
          }
          if (method === 'GET') this.lowerTo(res.headers[REVISION_HEADER]);
          else this.raiseTo(res.headers[REVISION_HEADER]);
          resolve((parsed ?? {}) as T);
        });
        res.on('error', (e) => reject(failover(new BerthError('TryAgainLater', `${ep.where}: ${e.message}`, 'controller connection failed'))));
      });
      const where = ep.where;
      req.on('timeout', () => req.destroy(new Error(`no reply from ${where} within ${this.opts.timeoutMs ?? 10_000} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        // A kept-alive connection the controller closed as idle just as we
        // reused it: the request most likely never reached it. A read is
        // sent once more on a fresh connection. A write is not: had the
        // controller committed it, a repeated bind would answer
        // `allocated: false` and a failed ADD would hold the address instead
        // of freeing it; the caller's error (try again) is the safe answer.
        if (method === 'GET' && req.reusedSocket && !retried && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) {
          return resolve(this.callOne<T>(ep, method, path, body, extra, true));
        }
        reject(failover(connectionError(where, e)));
      });
      req.end(payload);
    });
  }
}

/** The kind an error answer without a Berth error body stands for, by its status. */
const STATUS_KINDS: Record<number, ErrorKind> = {
  400: 'InvalidRequest', 401: 'Unauthorized', 403: 'Unauthorized', 404: 'NotFound', 405: 'MethodNotAllowed', 408: 'RequestTimeout',
  409: 'InvalidRequest', 413: 'RequestTooLarge', 414: 'RequestTooLarge', 415: 'UnsupportedMediaType', 429: 'TryAgainLater',
  431: 'RequestTooLarge', 502: 'TryAgainLater', 503: 'TryAgainLater', 504: 'TryAgainLater',
};

export function statusError(status: number, statusText: string | undefined, text: string): BerthError {
  const kind = STATUS_KINDS[status] ?? (status >= 500 ? 'Internal' : 'InvalidRequest');
  const reason = statusText || http.STATUS_CODES[status] || 'error';
  const shown = text.trim() === '' ? 'empty body' : text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return new BerthError(kind, shown, `controller answered ${status} ${reason}`);
}

/**
 * TLS failures are TlsFailed, naming the reason and the flag that can fix
 * it; everything else at the connection level is TryAgainLater.
 */
export function connectionError(where: string, e: NodeJS.ErrnoException): BerthError {
  const code = e.code ?? '';
  const verify = /^(UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|CERT_|ERR_TLS_CERT_ALTNAME|HOSTNAME_MISMATCH)/.test(code);
  if (verify) return new BerthError('TlsFailed', `${where}: ${e.message} (${code}); check --ca`, 'controller certificate not trusted');
  if (/^ERR_SSL_|^EPROTO$|^ERR_TLS_/.test(code) || /alert|handshake|wrong version number/i.test(e.message)) {
    const hint = /certificate required|handshake failure/i.test(e.message) ? '; the controller may require a client certificate (--cert, --key)' : '';
    return new BerthError('TlsFailed', `${where}: ${e.message.replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '')}${code ? ` (${code})` : ''}${hint}`);
  }
  return new BerthError('TryAgainLater', `${where}: ${e.message}`, 'controller unreachable');
}

function enc(s: string): string { return encodeURIComponent(s); }

function query(q: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : '';
}
