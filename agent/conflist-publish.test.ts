import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, silentLogger } from '../common/log';
import { ConflistPublisher, publishStep } from './conflist-publish';
import { CONFLIST_NAME, conflistText } from './install-cni';

test('publishStep (property): stopping always withdraws; ready publishes; once ready, only serving keeps it; before, unready withdraws past the grace, else leaves', (t) => {
  fc.assert(fc.property(
    fc.record({ ready: fc.boolean(), serving: fc.boolean(), everReady: fc.boolean(), stopping: fc.boolean(), sinceStartMs: fc.nat(100_000), startGraceMs: fc.nat(100_000) }),
    (s) => {
      const step = publishStep(s);
      if (s.stopping) return step === 'withdraw';
      if (s.ready) return step === 'publish';
      if (s.everReady) return step === (s.serving ? 'publish' : 'withdraw');
      return step === (s.sinceStartMs >= s.startGraceMs ? 'withdraw' : 'leave');
    },
  ));
  t.pass();
});

const inputs = { cniVersion: '1.0.0', network: 'berth', pool: 'default', agentSocket: '/run/berth/agent.sock', journalDir: '/var/lib/berth/del-journal' };
const ident = (p: string) => { const s = statSync(p, { bigint: true }); return [s.ino, s.mtimeNs]; };

function node(t: ExecutionContext, checks: Record<string, boolean> & { cniSocket?: boolean }, o: { startGraceMs?: number; lines?: string[] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-publish-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const confDir = join(dir, 'net.d');
  const binDir = join(dir, 'bin');
  mkdirSync(confDir);
  mkdirSync(binDir);
  let now = 0;
  const log = o.lines ? createLogger({}, { write: (l) => o.lines!.push(l) }) : silentLogger;
  const p = new ConflistPublisher({ confDir, binDir, inputs, readiness: () => checks, serving: () => checks.cniSocket ?? true, log, now: () => now, startGraceMs: o.startGraceMs ?? 1000 });
  return { p, confDir, binDir, file: join(confDir, CONFLIST_NAME), advance: (ms: number) => { now += ms; } };
}

test('publisher: nothing before ready; exactly conflistText once ready; a second pass rewrites nothing; a lost registration keeps it (one warning); not serving withdraws only our file', (t) => {
  const checks = { registered: false, cniSocket: false };
  const lines: string[] = [];
  const n = node(t, checks, { lines });
  writeFileSync(join(n.confDir, '05-other.conflist'), '{}');
  t.is(n.p.sync(), 'leave');
  t.deepEqual(readdirSync(n.confDir), ['05-other.conflist']);
  checks.registered = checks.cniSocket = true;
  t.is(n.p.sync(), 'publish');
  t.is(readFileSync(n.file, 'utf8'), conflistText({ ...inputs, chain: [] }));
  t.is(statSync(n.file).mode & 0o777, 0o644);
  const before = ident(n.file);
  n.p.sync();
  t.deepEqual(ident(n.file), before, 'same bytes: not rewritten');
  writeFileSync(join(n.binDir, 'portmap'), 'x');
  n.p.sync();
  t.is(readFileSync(n.file, 'utf8'), conflistText({ ...inputs, chain: ['portmap'] }), 'a portmap installed later is chained');
  checks.registered = false;
  t.is(n.p.sync(), 'publish', 'etcd lost: every node would go NotReady at once, and its pods be evicted');
  t.is(n.p.sync(), 'publish');
  t.true(readdirSync(n.confDir).includes(CONFLIST_NAME));
  checks.cniSocket = false;
  t.is(n.p.sync(), 'withdraw');
  t.deepEqual(readdirSync(n.confDir), ['05-other.conflist']);
  const logged = lines.map((l) => JSON.parse(l));
  t.deepEqual(logged.map((l) => l.msg), ['cni conflist published', 'cni conflist published', 'agent not ready, still serving CNI: conflist kept', 'cni conflist withdrawn']);
  t.deepEqual(logged[2].failing, ['registered']);
  t.is(logged[3].why, 'not serving');
});

test('publisher: a file left by an earlier agent stays untouched through a start within the grace, and is withdrawn past it', (t) => {
  const checks = { ready: false };
  const n = node(t, checks, { startGraceMs: 1000 });
  writeFileSync(n.file, conflistText({ ...inputs, chain: [] }));
  const before = ident(n.file);
  n.advance(999);
  t.is(n.p.sync(), 'leave');
  checks.ready = true;
  n.p.sync();
  t.deepEqual(ident(n.file), before, 'already right: same inode, same mtime');

  const stale = node(t, { ready: false }, { startGraceMs: 1000 });
  writeFileSync(stale.file, 'stale');
  stale.advance(1000);
  t.is(stale.p.sync(), 'withdraw');
  t.deepEqual(readdirSync(stale.confDir), []);
});

test('publisher: stop() withdraws even while the checks still hold, and later passes keep it withdrawn', (t) => {
  const n = node(t, { ready: true });
  n.p.sync();
  t.true(readdirSync(n.confDir).includes(CONFLIST_NAME));
  n.p.stop();
  t.deepEqual(readdirSync(n.confDir), []);
  t.is(n.p.sync(), 'withdraw');
  t.deepEqual(readdirSync(n.confDir), []);
});

test('publisher: a conf dir it cannot write to is one warning while it lasts, and publication follows once it can', (t) => {
  const lines: string[] = [];
  const n = node(t, { ready: true }, { lines });
  rmSync(n.confDir, { recursive: true });
  for (let i = 0; i < 3; i++) n.p.sync();
  t.deepEqual(lines.map((l) => JSON.parse(l).msg), ['cni conflist publication failed']);
  mkdirSync(n.confDir);
  n.p.sync();
  t.is(readFileSync(n.file, 'utf8'), conflistText({ ...inputs, chain: [] }));
  t.deepEqual(lines.map((l) => JSON.parse(l).msg), ['cni conflist publication failed', 'cni conflist published']);
});
