/**
 * The wire format between the `berth` relay (cni/relay, the binary the
 * runtime execs) and the host agent, on the agent's unix socket. One request
 * per connection:
 *
 *   relay → agent   "BERTH/3 <envBytes> <stdinBytes> <hasFd> <nsErrno>\n"
 *                   <envBytes>: NUL-terminated "CNI_X=value" entries
 *                   <stdinBytes>: stdin exactly as the runtime wrote it
 *   agent → relay   "BERTH/3 accepted\n" (RELAY_ACK) as soon as the whole
 *                   request is read, before any work on it; then
 *                   {"code": <exit code>, "out": <stdout>, "err": <stderr>}, then close
 *
 * The acknowledgement tells a wedged agent (alive, its socket accepting into
 * the kernel's backlog, its event loop stuck or the process stopped) from a
 * slow one (a controller failover, an etcd election): the relay waits
 * agentAcceptTimeoutMs for it, then agentTimeoutMs for the answer
 * (docs/cni-config.md "Timeouts"). A request the agent cannot read is
 * answered at once, without one. Version 2 ("BERTH/2", relays before the
 * acknowledgement) is still served, without one. This file and
 * cni/relay/relay.h (RELAY_MAGIC, RELAY_ACK) are the protocol's only homes.
 *
 * The header's first sendmsg carries, when hasFd is 1, the pod's network
 * namespace as an SCM_RIGHTS descriptor: the relay opened CNI_NETNS (O_PATH)
 * in the runtime's mount namespace, which the agent's may not match. nsErrno
 * is the errno of that open when it failed (0 otherwise). Everything is
 * length-framed, so no value is ever re-encoded: env values and stdin reach
 * cni/plugin.ts as the runtime gave them (decoded as UTF-8).
 *
 * Why the agent and not the relay runs the CNI contract: docs/architecture.md.
 */

export const RELAY_MAGIC = 'BERTH/3';
/** The version before the acknowledgement: served, never acknowledged. */
export const RELAY_MAGIC_V2 = 'BERTH/2';
/** What the agent sends a version-3 relay once it has read the request. Matches cni/relay/relay.h. */
export const RELAY_ACK = 'BERTH/3 accepted\n';
/** Matches cni/relay/relay.h RELAY_MAX_STDIN. */
export const MAX_RELAY_STDIN = 32 << 20;
/** Six variables; far above any real CNI_ARGS. */
export const MAX_RELAY_ENV = 1 << 20;
/** A header line is short; past this without a newline it is not one. */
export const MAX_RELAY_HEADER = 128;

export interface RelayHeader {
  /** 3: the relay waits for RELAY_ACK; 2: it does not. */
  version: 2 | 3;
  envBytes: number;
  stdinBytes: number;
  hasFd: boolean;
  /** errno of the relay's open(CNI_NETNS), 0 when it opened or there was none. */
  nsErrno: number;
}

export interface RelayFrame extends Omit<RelayHeader, 'envBytes' | 'stdinBytes' | 'version'> {
  /** The header's protocol version (default 3). */
  version?: 2 | 3;
  env: Record<string, string>;
  stdin: string;
}

export interface RelayAnswer {
  /** The relay's exit code. */
  code: number;
  /** Exactly what the relay writes to stdout. */
  out: string;
  /** What the relay writes to stderr (log lines). */
  err: string;
}

/** Parses the header line (without its newline); returns why not on a malformed one. */
export function parseRelayHeader(line: string): RelayHeader | string {
  const m = /^BERTH\/([23]) (\d{1,10}) (\d{1,10}) ([01]) (\d{1,5})$/.exec(line);
  if (!m) return 'malformed relay header';
  const h = { version: Number(m[1]) as 2 | 3, envBytes: Number(m[2]), stdinBytes: Number(m[3]), hasFd: m[4] === '1', nsErrno: Number(m[5]) };
  if (h.envBytes > MAX_RELAY_ENV) return `environment larger than ${MAX_RELAY_ENV} bytes`;
  if (h.stdinBytes > MAX_RELAY_STDIN) return `stdin larger than ${MAX_RELAY_STDIN} bytes`;
  return h;
}

/** Whether a connection's first bytes (at least RELAY_MAGIC.length + 1 of them) start a relay frame of either version. */
export function isRelayStart(first: Buffer): boolean {
  const s = first.subarray(0, RELAY_MAGIC.length + 1).toString('latin1');
  return s === `${RELAY_MAGIC} ` || s === `${RELAY_MAGIC_V2} `;
}

/**
 * "K=V\0K2=V2\0" → a null-prototype map: a key such as __proto__ is only
 * ever a key. Entries without '=' are skipped; the first of a repeated key wins.
 */
export function parseEnvBlock(buf: Buffer): Record<string, string> {
  const env = Object.create(null) as Record<string, string>;
  for (const entry of buf.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const k = entry.slice(0, eq);
    if (!(k in env)) env[k] = entry.slice(eq + 1);
  }
  return env;
}

/** Builds a request frame: what the relay sends (for tests and tools written in TypeScript). */
export function encodeRelayFrame(env: Record<string, string | undefined>, stdin: string | Buffer, nsErrno = 0, hasFd = false, magic = RELAY_MAGIC): Buffer {
  const envBuf = Buffer.from(Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}\0`).join(''), 'utf8');
  const body = typeof stdin === 'string' ? Buffer.from(stdin, 'utf8') : stdin;
  return Buffer.concat([Buffer.from(`${magic} ${envBuf.length} ${body.length} ${hasFd ? 1 : 0} ${nsErrno}\n`), envBuf, body]);
}
