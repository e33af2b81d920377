/**
 * A test and tooling client for the agent socket's AgentRequest lines
 * (common/agent-protocol.ts): one connection, one JSON line out, one JSON
 * line back. Not the CNI front: runtimes exec the `berth` relay, which speaks
 * common/relay-protocol.ts. Tests use this to reach the handlers directly.
 *
 * Failures are split in two:
 *   - AgentUnavailable: nobody answered (socket missing, refused, reset,
 *     timed out, or closed before a full line);
 *   - an AgentResponse with ok:false: the agent answered; its error is passed
 *     through with Berth's code.
 */
import type * as Net from 'node:net';
import type { AgentRequest, AgentResponse } from '../../common/agent-protocol';

/** Bigger than any real response (a result is well under 4 KiB). */
const MAX_RESPONSE_BYTES = 1 << 20;

export class AgentUnavailable extends Error {
  readonly agentUnavailable = true as const;
  constructor(
    readonly reason: string,
    readonly socketPath: string,
  ) {
    super(`agent at ${socketPath} unavailable: ${reason}`);
    this.name = 'AgentUnavailable';
  }
}

export function isAgentUnavailable(e: unknown): e is AgentUnavailable {
  return typeof e === 'object' && e !== null && (e as { agentUnavailable?: unknown }).agentUnavailable === true;
}

function isResponse(x: unknown): x is AgentResponse {
  const r = x as { ok?: unknown; error?: unknown } | null;
  if (typeof r !== 'object' || r === null) return false;
  if (r.ok === true) return true;
  return r.ok === false && typeof r.error === 'object' && r.error !== null;
}

export type SendAgentRequest = (socketPath: string, req: AgentRequest, timeoutMs: number) => Promise<AgentResponse>;

export const sendAgentRequest: SendAgentRequest = (socketPath, req, timeoutMs) =>
  new Promise<AgentResponse>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const { connect } = require('node:net') as typeof Net;
    const sock = connect({ path: socketPath });
    const finish = (err: Error | undefined, res?: AgentResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(res as AgentResponse);
    };
    const timer = setTimeout(() => finish(new AgentUnavailable(`no answer within ${timeoutMs} ms`, socketPath)), timeoutMs);
    const tryLine = (final: boolean) => {
      const buf = Buffer.concat(chunks);
      const nl = buf.indexOf(0x0a);
      if (nl < 0 && !final) return;
      const line = (nl < 0 ? buf : buf.subarray(0, nl)).toString('utf8').trim();
      if (line === '') return finish(new AgentUnavailable('connection closed without a response', socketPath));
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return finish(new AgentUnavailable('response is not JSON', socketPath));
      }
      if (!isResponse(parsed)) return finish(new AgentUnavailable('response is not an AgentResponse', socketPath));
      finish(undefined, parsed);
    };
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      if (size > MAX_RESPONSE_BYTES) return finish(new AgentUnavailable('response too large', socketPath));
      tryLine(false);
    });
    sock.on('end', () => tryLine(true));
    sock.on('close', () => tryLine(true));
    sock.on('error', (e: NodeJS.ErrnoException) => finish(new AgentUnavailable(e.code ?? e.message, socketPath)));
  });
