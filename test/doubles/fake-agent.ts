/**
 * A fake host agent for the plugin's tests: a real unix-socket server that
 * speaks common/agent-protocol.ts, records every request and answers from a
 * canned responder. Test-only; never imported by cni/main.ts.
 */
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest, AgentResponse } from '../../common/agent-protocol';

/** 'close' drops the connection without answering; 'garbage' answers a non-JSON line. */
export type Responder = (req: AgentRequest) => AgentResponse | 'close' | 'garbage';

export interface FakeAgent {
  socketPath: string;
  dir: string;
  requests: AgentRequest[];
  respond: Responder;
  close(): Promise<void>;
}

export async function startFakeAgent(respond: Responder = () => ({ ok: true })): Promise<FakeAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-fake-agent-'));
  const socketPath = join(dir, 'agent.sock');
  const agent: FakeAgent = {
    socketPath,
    dir,
    requests: [],
    respond,
    close: () => new Promise<void>((res) => server.close(() => { rmSync(dir, { recursive: true, force: true }); res(); })),
  };
  const server: Server = createServer((sock) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const req = JSON.parse(buf.slice(0, nl)) as AgentRequest;
      agent.requests.push(req);
      const out = agent.respond(req);
      if (out === 'close') sock.destroy();
      else if (out === 'garbage') sock.end('not json\n');
      else sock.end(`${JSON.stringify(out)}\n`);
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(socketPath, () => res());
  });
  return agent;
}
