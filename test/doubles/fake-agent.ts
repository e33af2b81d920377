/**
 * A fake host agent for the plugin's tests: a real unix-socket server that
 * speaks the agent's protocols (common/relay-protocol.ts from the `berth`
 * relay, AgentRequest lines from test/doubles/agent-client.ts). Relay
 * requests go through the real CNI contract (cni/plugin.ts via
 * agent/cni-relay.ts, namespace checks included); only the handlers are
 * canned: every AgentRequest they get is recorded (as it would cross a wire,
 * JSON round-tripped) and answered by `respond`.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../../common/agent-protocol';
import { BerthError } from '../../common/errors';
import { createLogger } from '../../common/log';
import { acknowledge, readRequest } from '../../agent/cni-server';
import { answerRelay } from '../../agent/cni-relay';

/** 'close' drops the connection without answering; 'garbage' answers a non-JSON line. */
export type Responder = (req: AgentRequest) => AgentResponse | 'close' | 'garbage';

export interface FakeAgent {
  socketPath: string;
  dir: string;
  requests: AgentRequest[];
  respond: Responder;
  /** Relay requests: acknowledged at once (as the agent does), answered this much later (a slow but alive agent). */
  answerDelayMs: number;
  close(): Promise<void>;
}

export async function startFakeAgent(respond: Responder = () => ({ ok: true })): Promise<FakeAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-fake-agent-'));
  const socketPath = join(dir, 'agent.sock');
  const open = new Set<Socket>();
  const agent: FakeAgent = {
    socketPath,
    dir,
    requests: [],
    respond,
    answerDelayMs: 0,
    close: () => new Promise<void>((res) => {
      for (const s of open) s.destroy();
      server.close(() => { rmSync(dir, { recursive: true, force: true }); res(); });
    }),
  };
  const log = createLogger({ agent: 'fake' }, { level: 'error', write: () => undefined });
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    let misbehave: 'close' | 'garbage' | undefined;
    const canned = async (req: AgentRequest): Promise<AgentResponse> => {
      const { nsHandle: _h, ...wire } = req;
      agent.requests.push(JSON.parse(JSON.stringify(wire)) as AgentRequest);
      const out = agent.respond(req);
      if (out === 'close' || out === 'garbage') {
        misbehave = out;
        return { ok: false, error: new BerthError('Internal', 'fake agent misbehaves').toBody() };
      }
      return out;
    };
    void readRequest(sock).then(async (r) => {
      if (!r) return;
      let text: string;
      if (r.kind === 'relay') {
        if (!(await acknowledge(sock, r.frame))) {
          if (r.fd >= 0) closeSync(r.fd);
          return;
        }
        if (agent.answerDelayMs > 0) await new Promise((res) => setTimeout(res, agent.answerDelayMs));
        text = JSON.stringify(await answerRelay(r.frame, r.fd, canned, log));
      }
      else if (r.kind === 'line') text = JSON.stringify(await canned(JSON.parse(r.line) as AgentRequest));
      else {
        if (r.fd >= 0) closeSync(r.fd);
        text = JSON.stringify({ ok: false, error: new BerthError('Decode', r.why).toBody() });
      }
      if (misbehave === 'close') sock.destroy();
      else if (misbehave === 'garbage') sock.end('not json\n');
      else sock.end(`${text}\n`);
    });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(socketPath, () => res());
  });
  return agent;
}
