/**
 * A small typed client of the controller's HTTP API, used by the agent and
 * by berthctl. Node's http only: no framework, and every failure comes back
 * as a BerthError (connection failures are TryAgainLater).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type {
  BindRequest, BindResponse, CreatePool, Health, HistoryPage, HistoryQuery, HostView, LeaseFilter, LeasePage, LeaseView,
  PinRequest, PoolUsage, ReleaseRequest, ReleaseResponse,
} from './api';
import { BerthError, fromBody } from './errors';

export interface ClientOptions {
  /** http(s)://host:port, or unix:///path/to/controller.sock */
  url: string;
  token?: string;
  timeoutMs?: number;
}

export class ControllerClient {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly socketPath: string | undefined;
  constructor(private readonly opts: ClientOptions) {
    if (opts.url.startsWith('unix://')) {
      this.socketPath = opts.url.slice('unix://'.length);
      this.base = new URL('http://controller/');
    } else {
      this.base = new URL(opts.url.endsWith('/') ? opts.url : `${opts.url}/`);
    }
    const Agent = this.base.protocol === 'https:' ? https.Agent : http.Agent;
    this.agent = new Agent({ keepAlive: true, maxSockets: 256 });
  }

  health(): Promise<Health> { return this.call('GET', 'healthz'); }
  createPool(p: CreatePool): Promise<PoolUsage> { return this.call('POST', 'v1/pools', p); }
  pools(): Promise<{ pools: PoolUsage[] }> { return this.call('GET', 'v1/pools'); }
  pool(name: string): Promise<PoolUsage> { return this.call('GET', `v1/pools/${enc(name)}`); }
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

  close(): void { this.agent.destroy(); }

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(path, this.base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload) { headers['content-type'] = 'application/json'; headers['content-length'] = String(payload.length); }
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(url, { method, headers, agent: this.agent, socketPath: this.socketPath, timeout: this.opts.timeoutMs ?? 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try { parsed = text ? JSON.parse(text) : {}; } catch {
            return reject(new BerthError('Internal', `${res.statusCode} ${text.slice(0, 200)}`, 'controller sent a non-JSON reply'));
          }
          if ((res.statusCode ?? 500) >= 400) return reject(fromBody((parsed as { error?: unknown }).error ?? parsed));
          resolve(parsed as T);
        });
        res.on('error', (e) => reject(new BerthError('TryAgainLater', e.message, 'controller connection failed')));
      });
      const where = this.socketPath ?? url.origin;
      req.on('timeout', () => req.destroy(new Error(`no reply from ${where} within ${this.opts.timeoutMs ?? 10_000} ms`)));
      req.on('error', (e) => reject(new BerthError('TryAgainLater', `${where}: ${e.message}`, 'controller unreachable')));
      req.end(payload);
    });
  }
}

function enc(s: string): string { return encodeURIComponent(s); }

function query(q: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') params.set(k, String(v));
  const s = params.toString();
  return s ? `?${s}` : '';
}
