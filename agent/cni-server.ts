/**
 * The agent's unix socket, mode 0600 in a 0700 directory, one request per
 * connection: a `berth` relay frame (common/relay-protocol.ts, answered by
 * agent/cni-relay.ts) or an AgentRequest line (common/agent-protocol.ts, at
 * most MAX_REQUEST_BYTES). Connections are accepted paused and their first
 * message is read natively (recvWithFd), so the pod netns descriptor a relay
 * passes arrives with it. A malformed request gets a Decode error; a client
 * that vanishes, dawdles or floods only loses its own connection. Nothing a
 * client sends can crash the agent.
 */
import { closeSync, promises as fs } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { AgentRequest, AgentResponse, AgentVerb } from '../common/agent-protocol';
import { BerthError, castError } from '../common/errors';
import { isRelayStart, MAX_RELAY_HEADER, parseEnvBlock, parseRelayHeader, RELAY_ACK, RELAY_MAGIC, type RelayFrame, type RelayHeader } from '../common/relay-protocol';
import { answerRelay } from './cni-relay';
import { ADDON_PATH } from './kernel/netns';
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

/** Waiting for a relay's first message; a relay sends it right after connecting. */
export const FIRST_MESSAGE_TIMEOUT_MS = 2_000;
const FIRST_READ_BYTES = 64 * 1024;

interface RecvAddon {
  recvWithFd(sockFd: number, maxBytes: number, timeoutMs: number): Promise<{ data: Buffer; fd: number }>;
}
let recvAddon: RecvAddon | undefined;
const addon = (): RecvAddon => (recvAddon ??= require(ADDON_PATH) as RecvAddon);

/** The first read of a connection, with the descriptor it carries (fd -1 when none). */
async function firstRead(sock: Socket): Promise<{ data: Buffer; fd: number }> {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new BerthError('IO', 'connection has no fd');
  return addon().recvWithFd(fd, FIRST_READ_BYTES, FIRST_MESSAGE_TIMEOUT_MS);
}

export type Request =
  | { kind: 'relay'; frame: RelayFrame; fd: number }
  | { kind: 'line'; line: string }
  | { kind: 'bad'; why: string; fd: number };

/**
 * Reads one request from a connection accepted with pauseOnConnect: the
 * first message natively (it may carry the relay's netns fd), the rest as a
 * stream. Never rejects; a client that stalls past REQUEST_TIMEOUT_MS is
 * dropped (resolves undefined).
 */
export function readRequest(sock: Socket): Promise<Request | undefined> {
  return new Promise((resolve) => {
    let fd = -1;
    let settled = false;
    const chunks: Buffer[] = [];
    let size = 0;
    let need = -1; // relay: total frame bytes once the header is read
    let header: RelayHeader | undefined;
    let headLen = 0;
    const done = (r: Request | undefined) => {
      if (settled) return;
      settled = true;
      sock.setTimeout(0);
      sock.off('data', onData);
      if (r === undefined && fd >= 0) closeSync(fd);
      resolve(r);
    };
    const step = (ended: boolean) => {
      if (header && size < need && !ended) return; // concatenated once, when the frame is whole
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(buf);
      if (size === 0 && ended) return done({ kind: 'bad', why: 'request: connection closed before a full line', fd });
      if (buf.length < RELAY_MAGIC.length + 1 && !ended && buf[0] === 0x42) return;
      if (!isRelayStart(buf)) {
        const nl = buf.indexOf(0x0a);
        if (nl >= 0) return done({ kind: 'line', line: buf.subarray(0, nl).toString('utf8') });
        if (size > MAX_REQUEST_BYTES) return done({ kind: 'bad', why: `request larger than ${MAX_REQUEST_BYTES} bytes`, fd });
        if (ended) return done({ kind: 'bad', why: 'request: connection closed before a full line', fd });
        return;
      }
      if (!header) {
        const nl = buf.indexOf(0x0a);
        if (nl < 0) {
          if (buf.length > MAX_RELAY_HEADER || ended) return done({ kind: 'bad', why: 'relay request: malformed header', fd });
          return;
        }
        const h = parseRelayHeader(buf.subarray(0, nl).toString('latin1'));
        if (typeof h === 'string') return done({ kind: 'bad', why: `relay request: ${h}`, fd });
        header = h;
        headLen = nl + 1;
        need = headLen + h.envBytes + h.stdinBytes;
      }
      if (buf.length >= need) {
        const h = header;
        const env = parseEnvBlock(buf.subarray(headLen, headLen + h.envBytes));
        const stdin = buf.subarray(headLen + h.envBytes, need).toString('utf8');
        if (h.hasFd && fd < 0) return done({ kind: 'bad', why: 'relay request: announced a descriptor it did not pass', fd });
        if (!h.hasFd && fd >= 0) {
          closeSync(fd);
          fd = -1;
        }
        return done({ kind: 'relay', frame: { env, stdin, hasFd: h.hasFd, nsErrno: h.nsErrno, version: h.version }, fd });
      }
      if (ended) return done({ kind: 'bad', why: `relay request: connection closed after ${buf.length} of ${need} bytes`, fd });
    };
    const add = (d: Buffer) => {
      chunks.push(d);
      size += d.length;
    };
    const onData = (d: Buffer) => {
      if (settled) return;
      add(d);
      step(false);
    };
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => {
      done(undefined);
      sock.destroy();
    });
    sock.on('end', () => { if (!settled) step(true); });
    firstRead(sock).then(
      (first) => {
        fd = first.fd;
        if (first.data.length === 0) return step(true);
        add(first.data);
        step(false);
        if (!settled) {
          sock.on('data', onData);
          sock.resume();
        }
      },
      () => {
        done(undefined);
        sock.destroy();
      },
    );
  });
}

/**
 * Tells a version-3 relay its request was read, before any work on it: the
 * relay's proof that this event loop runs (common/relay-protocol.ts). Every
 * server that answers relays calls this right after readRequest, and works
 * on the request only when it resolves true.
 *
 * False: the relay is gone. It gave up waiting (the agent was stopped or
 * stuck while the request sat in the socket's backlog) and has already
 * answered the runtime alone: 11, or a journalled DEL. Doing the work now
 * would act behind the runtime's back (an ADD the runtime counts as failed
 * would bind and plumb, and drop the DEL journalled after it), so the
 * request is dropped. A unix socket whose peer has closed refuses the write
 * (EPIPE); one the relay only shut for writing, as it does while it waits,
 * takes it.
 */
export function acknowledge(sock: Socket, frame: Pick<RelayFrame, 'version'>): Promise<boolean> {
  if ((frame.version ?? 3) !== 3) return Promise.resolve(!sock.destroyed);
  if (sock.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => sock.write(RELAY_ACK, (err) => resolve(!err)));
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
    const answer = (text: string) => {
      if (!sock.destroyed) sock.end(`${text}\n`);
    };
    const handleLine = async (line: string) => {
      let req: unknown;
      try {
        req = JSON.parse(line);
      } catch (e) {
        return answer(JSON.stringify(decodeError(`request: ${(e as Error).message}`)));
      }
      const why = requestProblem(req);
      if (why) return answer(JSON.stringify(decodeError(`request: ${why}`)));
      const r = req as AgentRequest;
      delete r.nsHandle; // only a descriptor the relay passed makes one
      const started = Date.now();
      const resp = await handler(r).catch((e: unknown) => ({ ok: false, error: new BerthError('Internal', String((e as Error)?.message ?? e)).toBody() }) as AgentResponse);
      log.debug('cni request', { verb: r.verb, containerId: r.containerId || undefined, ms: Date.now() - started, ok: resp.ok, code: resp.ok ? undefined : resp.error.code });
      answer(JSON.stringify(resp));
    };
    const handleRelay = async (frame: RelayFrame, fd: number) => {
      const started = performance.now();
      const a = await answerRelay(frame, fd, handler, log);
      const ms = Math.round((performance.now() - started) * 10) / 10;
      log.debug('cni relay request', { verb: frame.env.CNI_COMMAND, containerId: frame.env.CNI_CONTAINERID || undefined, ms, code: a.code });
      answer(JSON.stringify(a));
    };
    const p = readRequest(sock).then(async (r) => {
      if (!r) return;
      if (r.kind === 'line') return handleLine(r.line);
      if (r.kind === 'relay') {
        if (await acknowledge(sock, r.frame)) return handleRelay(r.frame, r.fd);
        if (r.fd >= 0) closeSync(r.fd);
        log.warn('the relay left before its request was read; dropped undone (the relay answered the runtime alone)', { verb: r.frame.env.CNI_COMMAND, containerId: r.frame.env.CNI_CONTAINERID || undefined });
        sock.destroy();
        return;
      }
      if (r.fd >= 0) closeSync(r.fd);
      answer(JSON.stringify(decodeError(r.why)));
    }).catch((e: unknown) => {
      log.error('cni request failed', { error: castError(e).message });
      sock.destroy();
    });
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, serve);
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
