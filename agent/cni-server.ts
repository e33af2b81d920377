/**
 * The agent's end of common/agent-protocol.ts: a unix socket, mode 0600 in a
 * 0700 directory, one request per connection. Read one JSON line (at most
 * MAX_REQUEST_BYTES), answer one JSON line, close. A malformed request gets
 * {ok:false, error: Decode}; a client that vanishes, dawdles or floods only
 * loses its own connection. Nothing a client sends can crash the agent.
 */
import { promises as fs } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { AgentRequest, AgentResponse, AgentVerb } from '../common/agent-protocol';
import { BerthError } from '../common/errors';
import type { Logger } from '../common/log';
import type { CniHandler, CniServer } from './cni-api';

export const MAX_REQUEST_BYTES = 1 << 20;
/** A client must send its whole request within this time. */
export const REQUEST_TIMEOUT_MS = 10_000;
const VERBS: readonly AgentVerb[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'];

/** Shape check only; the plugin did the semantic validation. Returns why not, or undefined. */
export function requestProblem(x: unknown): string | undefined {
  const r = x as Partial<AgentRequest> | null;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return 'expected a JSON object';
  if (!VERBS.includes(r.verb as AgentVerb)) return `verb: ${JSON.stringify(r.verb)}`;
  for (const k of ['containerId', 'netns', 'ifName', 'network', 'pool'] as const) if (typeof r[k] !== 'string') return `${k}: expected a string`;
  if (typeof r.args !== 'object' || r.args === null || Array.isArray(r.args) || Object.values(r.args).some((v) => typeof v !== 'string')) {
    return 'args: expected an object of strings';
  }
  if (r.mtu !== undefined && (!Number.isInteger(r.mtu) || r.mtu < 68)) return 'mtu: expected an integer >= 68';
  if (r.ips !== undefined && (!Array.isArray(r.ips) || r.ips.some((v) => typeof v !== 'string'))) return 'ips: expected an array of strings';
  if (r.mac !== undefined && typeof r.mac !== 'string') return 'mac: expected a string';
  if (r.validAttachments !== undefined && (!Array.isArray(r.validAttachments) ||
    r.validAttachments.some((a) => typeof a?.containerId !== 'string' || typeof a?.ifName !== 'string'))) return 'validAttachments: expected [{containerId, ifName}]';
  return undefined;
}

function decodeError(details: string): AgentResponse {
  return { ok: false, error: new BerthError('Decode', details).toBody() };
}

/** Removes a socket file nobody listens on; refuses to steal a live one. */
async function clearStale(socketPath: string): Promise<void> {
  const st = await fs.lstat(socketPath).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new BerthError('IO', `${socketPath} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect({ path: socketPath });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new BerthError('IO', `${socketPath}: another agent is listening`);
  await fs.rm(socketPath, { force: true });
}

export async function startCniServer(socketPath: string, handler: CniHandler, log: Logger): Promise<CniServer> {
  await fs.mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await clearStale(socketPath);
  const open = new Set<Socket>();
  const inflight = new Set<Promise<void>>();

  const serve = (sock: Socket) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => undefined); // the client left; its answer has nowhere to go
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy());
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const answer = (resp: AgentResponse) => {
      if (!sock.destroyed) sock.end(`${JSON.stringify(resp)}\n`);
    };
    const onData = (d: Buffer) => {
      if (done) return;
      const nl = d.indexOf(0x0a);
      chunks.push(nl < 0 ? d : d.subarray(0, nl));
      size += nl < 0 ? d.length : nl;
      if (size > MAX_REQUEST_BYTES) {
        done = true;
        return answer(decodeError(`request larger than ${MAX_REQUEST_BYTES} bytes`));
      }
      if (nl < 0) return;
      done = true;
      sock.setTimeout(0);
      sock.off('data', onData);
      handle(Buffer.concat(chunks).toString('utf8'));
    };
    const handle = (line: string) => {
      let req: unknown;
      try {
        req = JSON.parse(line);
      } catch (e) {
        return answer(decodeError(`request: ${(e as Error).message}`));
      }
      const why = requestProblem(req);
      if (why) return answer(decodeError(`request: ${why}`));
      const started = Date.now();
      const p = handler(req as AgentRequest)
        .catch((e: unknown) => ({ ok: false, error: new BerthError('Internal', String((e as Error)?.message ?? e)).toBody() }) as AgentResponse)
        .then((resp) => {
          const r = req as AgentRequest;
          log.debug('cni request', { verb: r.verb, containerId: r.containerId || undefined, ms: Date.now() - started, ok: resp.ok, code: resp.ok ? undefined : resp.error.code });
          answer(resp);
        });
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    };
    sock.on('data', onData);
    sock.on('end', () => {
      if (!done) {
        done = true;
        answer(decodeError('request: connection closed before a full line'));
      }
    });
  };

  const server = createServer({ allowHalfOpen: true }, serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log.error('agent socket error', { socketPath, error: e.message }));
  await fs.chmod(socketPath, 0o600);
  log.info('CNI socket listening', { socketPath });

  return {
    socketPath,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Requests being handled finish and answer; connections still sending are dropped.
      await Promise.allSettled([...inflight]);
      for (const s of open) s.destroy();
      await closed;
      await fs.rm(socketPath, { force: true });
    },
  };
}
