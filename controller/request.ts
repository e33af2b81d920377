/**
 * The API's request hygiene, kept apart from the route table: reading the
 * request target, the Host and Authorization headers, the content type and a
 * bounded body (size, JSON depth, deadline), and answering what Node's HTTP
 * parser itself rejects. Everything here turns bad input into a BerthError
 * with a 4xx status, so no request can reach a route half-parsed, and none
 * can make the process throw.
 *
 * Parsing is pure (unit and property tests in request.test.ts); readBody and
 * answerClientError are the only functions that touch a socket.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { BerthError } from '../common/errors';

/** Largest accepted request body (every API body is a small JSON object). */
export const MAX_BODY = 64 * 1024;
/** After a 413, this much more of the body is read and discarded so the client sees the answer (a "lingering close"). */
export const MAX_DISCARD = 1024 * 1024;
/** Deepest accepted JSON nesting; API bodies nest at most 3 deep. */
export const MAX_JSON_DEPTH = 32;
/** Default body deadline: a body must arrive in full within this time of the request's headers. */
export const DEFAULT_BODY_TIMEOUT_MS = 10_000;

export interface Target { path: string; query: URLSearchParams }

/**
 * Splits a request target (RFC 9112 3.2: origin-form, or absolute-form) into
 * its path and query without `new URL`, which throws on inputs like `//`.
 */
export function parseTarget(url: string | undefined): Target {
  let target = url ?? '/';
  if (/^https?:\/\//i.test(target)) {
    const slash = target.indexOf('/', target.indexOf('//') + 2);
    target = slash < 0 ? '/' : target.slice(slash);
  }
  if (!target.startsWith('/')) throw new BerthError('InvalidRequest', target.slice(0, 200), 'request target must be a path');
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const hash = path.indexOf('#');
  return { path: hash < 0 ? path : path.slice(0, hash), query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)) };
}

/** decodeURIComponent that answers 400 instead of throwing URIError on `%`, `%zz` or broken UTF-8. */
export function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new BerthError('InvalidRequest', segment.slice(0, 200), 'malformed percent-encoding in the path');
  }
}

/** True when `text` nests arrays/objects deeper than `max` (strings are skipped); linear, no recursion. */
export function jsonTooDeep(text: string, max: number = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}

/** A request body as the JSON object every write takes: 400 for empty, too deep, not JSON or not an object. */
export function parseJsonObject(text: string): Record<string, unknown> {
  if (text.trim() === '') throw new BerthError('InvalidRequest', 'empty body', 'expected a JSON object');
  if (jsonTooDeep(text)) throw new BerthError('Decode', `nested deeper than ${MAX_JSON_DEPTH}`, 'request body is nested too deep');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new BerthError('Decode', (e as Error).message, 'request body is not a JSON object');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BerthError('Decode', 'not an object', 'request body is not a JSON object');
  return v as Record<string, unknown>;
}

/** `application/json`, any case, with or without parameters (RFC 9110 8.3.1). */
export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  return header.split(';')[0].trim().toLowerCase() === 'application/json';
}

/** The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 7235 2.1). */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^bearer +([^\s]+) *$/i.exec(header ?? '');
  return m ? m[1] : undefined;
}

/** 127.0.0.0/8, ::1, localhost: where a browser's page is the only stranger that can call. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/**
 * The Host values a loopback listener accepts (DNS-rebinding protection: a
 * page served from evil.example that resolves to 127.0.0.1 still sends
 * `Host: evil.example`). `address` is the bound address, `port` the bound port.
 */
export function loopbackHostNames(address: string, port: number, tls: boolean): Set<string> {
  const bound = address.includes(':') ? `[${address}]` : address;
  const names = new Set(['localhost', '127.0.0.1', '[::1]', bound.toLowerCase()]);
  const out = new Set<string>();
  for (const n of names) {
    out.add(`${n}:${port}`);
    if (port === (tls ? 443 : 80)) out.add(n);
  }
  return out;
}

export function checkHost(header: string | undefined, allowed: ReadonlySet<string>): void {
  if (header === undefined || !allowed.has(header.trim().toLowerCase())) {
    throw new BerthError('InvalidRequest', `Host: ${(header ?? '(none)').slice(0, 200)}`, 'Host not accepted on a loopback listener (expected localhost, 127.0.0.1 or [::1] with the port)');
  }
}

export interface BodyLimits { maxBytes?: number; timeoutMs?: number }

/**
 * Reads a request body as text within a size limit and a deadline.
 *  - Over the limit (declared or counted): rejects RequestTooLarge (413) at
 *    once, and keeps reading and discarding up to MAX_DISCARD more so the
 *    client can read the 413 before the connection goes; past that, the
 *    socket is destroyed.
 *  - Not complete within timeoutMs (a chunked body that never ends): rejects
 *    RequestTimeout (408); the caller answers with `Connection: close`.
 */
export function readBody(req: IncomingMessage, limits: BodyLimits = {}): Promise<string> {
  const max = limits.maxBytes ?? MAX_BODY;
  const timeoutMs = limits.timeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (e: BerthError | undefined, text?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e) reject(e); else resolve(text!);
    };
    const timer = setTimeout(() => {
      settle(new BerthError('RequestTimeout', `body not complete after ${timeoutMs} ms (${size} bytes received)`));
    }, timeoutMs);
    const tooLarge = (what: string) => settle(new BerthError('RequestTooLarge', `${what}; the limit is ${max} bytes`, 'request body too large'));
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) tooLarge(`Content-Length ${declared}`);
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (settled) {
        if (size > max + MAX_DISCARD) req.socket.destroy();
        return;
      }
      if (size > max) { chunks.length = 0; tooLarge(`more than ${max} bytes`); return; }
      chunks.push(c);
    });
    req.on('end', () => settle(undefined, Buffer.concat(chunks).toString('utf8')));
    req.on('error', (e) => settle(new BerthError('IO', e.message)));
    req.on('close', () => clearTimeout(timer));
  });
}

const CLIENT_ERRORS: Record<string, [number, BerthError]> = {
  HPE_HEADER_OVERFLOW: [431, new BerthError('RequestTooLarge', 'the request line and headers exceed the server limit', 'request headers or URL too large')],
  ERR_HTTP_REQUEST_TIMEOUT: [408, new BerthError('RequestTimeout', 'the request did not arrive in time')],
  ERR_HTTP_HEADERS_TIMEOUT: [408, new BerthError('RequestTimeout', 'the request headers did not arrive in time')],
  HPE_INVALID_METHOD: [405, new BerthError('MethodNotAllowed', 'unknown HTTP method')],
};

/**
 * Node's 'clientError': the parser rejected the request before any route saw
 * it (bad request line, headers too large, invalid method). Node's default
 * answers with an empty body; this one answers JSON like every other error,
 * then closes the connection (the stream can't be trusted past a parse error).
 */
export function answerClientError(err: NodeJS.ErrnoException & { rawPacket?: unknown }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return; }
  const [status, berr] = CLIENT_ERRORS[err.code ?? ''] ?? [400, new BerthError('InvalidRequest', `${err.code ?? 'parse error'}: ${err.message}`.slice(0, 300), 'malformed HTTP request')];
  const text = JSON.stringify({ error: berr.toBody() });
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

/** CONNECT (a proxy's method) never reaches the request handler in Node: answer it here, 405 like any unknown method. */
export function answerConnect(req: IncomingMessage, socket: Socket): void {
  const text = JSON.stringify({ error: new BerthError('MethodNotAllowed', `CONNECT ${(req.url ?? '').slice(0, 200)}: the API is not a proxy`).toBody() });
  socket.end(`HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };
