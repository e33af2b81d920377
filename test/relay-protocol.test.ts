/**
 * The relay protocol's versions on the agent's real socket server
 * (agent/cni-server.ts): a version-3 request is acknowledged before its
 * answer, a version-2 one (relays before the acknowledgement) is answered
 * without one. (A request whose relay gave up before it was read is dropped:
 * test/agent-wedged.test.ts, with a stopped agent, where that is certain.)
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest } from '../common/agent-protocol';
import { silentLogger } from '../common/log';
import { DEFAULT_AGENT_ACCEPT_TIMEOUT_MS, DEFAULT_AGENT_CONNECT_TIMEOUT_MS, DEFAULT_AGENT_TIMEOUT_MS } from '../common/cni-config';
import { encodeRelayFrame, RELAY_ACK, RELAY_MAGIC, RELAY_MAGIC_V2 } from '../common/relay-protocol';
import { startCniServer } from '../agent/cni-server';

const STATUS = { CNI_COMMAND: 'STATUS' };
const CONF = JSON.stringify({ cniVersion: '1.1.0', name: 'n', type: 'berth', pool: 'p' });

async function server(t: { teardown(fn: () => unknown): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-relay-protocol-'));
  const seen: AgentRequest[] = [];
  const s = await startCniServer(join(dir, 'agent.sock'), async (req) => { seen.push(req); return { ok: true }; }, silentLogger);
  t.teardown(async () => { await s.close(); rmSync(dir, { recursive: true, force: true }); });
  return { path: s.socketPath, seen };
}

/** Sends one frame, half-closes as the relay does, and returns everything the agent sent. */
function exchange(path: string, frame: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect({ path, allowHalfOpen: true });
    let got = '';
    c.on('data', (d) => (got += d.toString()));
    c.on('end', () => { c.destroy(); resolve(got); });
    c.on('error', reject);
    c.end(frame);
  });
}

test('version 3: the acknowledgement, then the answer', async (t) => {
  const s = await server(t);
  const got = await exchange(s.path, encodeRelayFrame(STATUS, CONF));
  t.true(got.startsWith(RELAY_ACK), got);
  t.like(JSON.parse(got.slice(RELAY_ACK.length)), { code: 0, out: '' });
  t.is(s.seen.length, 1);
});

test('version 2: the answer alone, as those relays expect', async (t) => {
  const s = await server(t);
  const got = await exchange(s.path, encodeRelayFrame(STATUS, CONF, 0, false, RELAY_MAGIC_V2));
  t.like(JSON.parse(got), { code: 0, out: '' });
  t.is(s.seen.length, 1);
});

test('the relay (cni/relay/relay.h) and the agent (common/) agree on the magic, the acknowledgement and the defaults', (t) => {
  const h = readFileSync(join(__dirname, '../../cni/relay/relay.h'), 'utf8');
  const define = (name: string) => /^#define \S+ (.*)$/m.exec(h.split('\n').find((l) => l.startsWith(`#define ${name} `)) ?? '')?.[1];
  t.is(define('RELAY_MAGIC'), JSON.stringify(RELAY_MAGIC));
  t.is(define('RELAY_ACK'), JSON.stringify(RELAY_ACK));
  t.is(Number(define('RELAY_DEFAULT_TIMEOUT_MS')), DEFAULT_AGENT_TIMEOUT_MS);
  t.is(Number(define('RELAY_DEFAULT_CONNECT_MS')), DEFAULT_AGENT_CONNECT_TIMEOUT_MS);
  t.is(Number(define('RELAY_DEFAULT_ACCEPT_MS')), DEFAULT_AGENT_ACCEPT_TIMEOUT_MS);
});
