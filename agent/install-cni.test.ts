import test from 'ava';
import fc from 'fast-check';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../common/cni-config';
import { isBerthError } from '../common/errors';
import { CHAINABLE, CONFLIST_NAME, conflistText, installCni, uninstallCni, type Chainable, type ConflistInputs } from './install-cni';

const base: ConflistInputs = { cniVersion: '1.0.0', network: 'berth', pool: 'default', agentSocket: '/run/berth/agent.sock', journalDir: '/var/lib/berth/del-journal', chain: [] };

test('conflist: berth first, with the agent socket, journal and pool, readable by the plugin\'s own parser', (t) => {
  const list = JSON.parse(conflistText(base));
  t.is(list.cniVersion, '1.0.0');
  t.is(list.name, 'berth');
  t.is(list.plugins.length, 1);
  const conf = parseNetConf({ ...list.plugins[0], cniVersion: list.cniVersion, name: list.name });
  t.is(conf.pool, 'default');
  t.is(conf.agentSocket, '/run/berth/agent.sock');
  t.is(conf.journalDir, '/var/lib/berth/del-journal');
  t.is(conf.mtu, undefined);
});

test('conflist: portmap and bandwidth chained after berth in a fixed order, with their capabilities', (t) => {
  const list = JSON.parse(conflistText({ ...base, chain: ['bandwidth', 'portmap'] }));
  t.deepEqual(list.plugins.map((p: { type: string }) => p.type), ['berth', 'portmap', 'bandwidth']);
  t.deepEqual(list.plugins[1].capabilities, { portMappings: true });
  t.deepEqual(list.plugins[2].capabilities, { bandwidth: true });
});

test('conflist: an unsupported cniVersion is refused', (t) => {
  const e = t.throws(() => conflistText({ ...base, cniVersion: '2.0.0' }));
  t.true(isBerthError(e) && e.kind === 'InvalidConfig');
});

test('conflist (property): same inputs, same bytes; every input lands where the plugin reads it', (t) => {
  const path = fc.stringMatching(/^\/[a-z0-9/_.-]{1,40}$/);
  fc.assert(fc.property(
    fc.record({
      cniVersion: fc.constantFrom('0.3.1', '0.4.0', '1.0.0', '1.1.0'),
      network: fc.stringMatching(/^[a-z0-9][a-z0-9_.-]{0,20}$/),
      pool: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/),
      agentSocket: path, journalDir: path,
      mtu: fc.option(fc.integer({ min: 576, max: 9000 }), { nil: undefined }),
      chain: fc.subarray([...CHAINABLE] as Chainable[]),
    }),
    (i) => {
      const text = conflistText(i);
      if (text !== conflistText({ ...i, chain: [...i.chain].reverse() })) return false;
      const list = JSON.parse(text);
      const conf = parseNetConf({ ...list.plugins[0], cniVersion: list.cniVersion, name: list.name });
      return conf.pool === i.pool && conf.agentSocket === i.agentSocket && conf.journalDir === i.journalDir && conf.mtu === i.mtu
        && list.cniVersion === i.cniVersion && list.plugins.length === 1 + i.chain.length && text.endsWith('}\n');
    },
  ));
  t.pass();
});

function node(t: { teardown(f: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-install-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const binDir = join(dir, 'opt/cni/bin');
  const confDir = join(dir, 'etc/cni/net.d');
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const source = join(dir, 'berth-src');
  writeFileSync(source, '#!/bin/sh\necho plugin v1\n');
  chmodSync(source, 0o600);
  return { dir, binDir, confDir, source, opts: { ...base, source, binDir, confDir } };
}
const ident = (p: string) => { const s = statSync(p, { bigint: true }); return { ino: s.ino, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, mode: s.mode }; };

test('install: plugin 0755 and conflist in place; a rerun writes nothing (same inode, same mtime); no temp files', (t) => {
  const n = node(t);
  const first = installCni(n.opts);
  t.deepEqual(first.written, [join(n.binDir, 'berth'), join(n.confDir, CONFLIST_NAME)]);
  t.is(statSync(join(n.binDir, 'berth')).mode & 0o7777, 0o755);
  t.deepEqual(readFileSync(join(n.binDir, 'berth')), readFileSync(n.source));
  t.is(readFileSync(join(n.confDir, CONFLIST_NAME), 'utf8'), conflistText({ ...base, chain: [] }));
  const before = [ident(join(n.binDir, 'berth')), ident(join(n.confDir, CONFLIST_NAME))];
  const again = installCni(n.opts);
  t.deepEqual(again.written, []);
  t.deepEqual([ident(join(n.binDir, 'berth')), ident(join(n.confDir, CONFLIST_NAME))], before);
  t.deepEqual(readdirSync(n.binDir), ['berth']);
  t.deepEqual(readdirSync(n.confDir), [CONFLIST_NAME]);
});

test('install: a changed input rewrites only the file it changes, by rename (new inode)', (t) => {
  const n = node(t);
  installCni(n.opts);
  const bin = ident(join(n.binDir, 'berth'));
  const conf = ident(join(n.confDir, CONFLIST_NAME));
  const out = installCni({ ...n.opts, pool: 'other' });
  t.deepEqual(out.written, [join(n.confDir, CONFLIST_NAME)]);
  t.deepEqual(ident(join(n.binDir, 'berth')), bin);
  t.not(ident(join(n.confDir, CONFLIST_NAME)).ino, conf.ino);
  writeFileSync(n.source, '#!/bin/sh\necho plugin v2\n');
  t.deepEqual(installCni({ ...n.opts, pool: 'other' }).written, [join(n.binDir, 'berth')]);
  t.is(readFileSync(join(n.binDir, 'berth'), 'utf8'), '#!/bin/sh\necho plugin v2\n');
  chmodSync(join(n.binDir, 'berth'), 0o700);
  t.deepEqual(installCni({ ...n.opts, pool: 'other' }).written, [join(n.binDir, 'berth')], 'a wrong mode is repaired');
  t.is(statSync(join(n.binDir, 'berth')).mode & 0o7777, 0o755);
});

test('install: portmap and bandwidth are chained only when their binaries are in the bin dir', (t) => {
  const n = node(t);
  t.deepEqual(installCni(n.opts).chain, []);
  writeFileSync(join(n.binDir, 'portmap'), 'x');
  const out = installCni(n.opts);
  t.deepEqual(out.chain, ['portmap']);
  t.deepEqual(JSON.parse(readFileSync(join(n.confDir, CONFLIST_NAME), 'utf8')).plugins.map((p: { type: string }) => p.type), ['berth', 'portmap']);
  writeFileSync(join(n.binDir, 'bandwidth'), 'x');
  t.deepEqual(installCni(n.opts).chain, ['portmap', 'bandwidth']);
});

test('install: a missing dir or plugin is InvalidConfig and writes nothing', (t) => {
  const n = node(t);
  const e1 = t.throws(() => installCni({ ...n.opts, confDir: join(n.dir, 'nope') }));
  t.true(isBerthError(e1) && e1.kind === 'InvalidConfig');
  const e2 = t.throws(() => installCni({ ...n.opts, source: join(n.dir, 'nope') }));
  t.true(isBerthError(e2) && e2.kind === 'InvalidConfig');
  t.deepEqual(readdirSync(n.binDir), []);
  t.deepEqual(readdirSync(n.confDir), []);
});

test('uninstall removes exactly its own two files; foreign plugins and conflists stay', (t) => {
  const n = node(t);
  writeFileSync(join(n.binDir, 'portmap'), 'x');
  writeFileSync(join(n.binDir, 'berth-other'), 'x');
  writeFileSync(join(n.confDir, '05-other.conflist'), '{}');
  writeFileSync(join(n.confDir, '10-berth.conf'), '{}');
  installCni(n.opts);
  t.deepEqual(uninstallCni(n.opts).sort(), [join(n.binDir, 'berth'), join(n.confDir, CONFLIST_NAME)].sort());
  t.deepEqual(readdirSync(n.binDir).sort(), ['berth-other', 'portmap']);
  t.deepEqual(readdirSync(n.confDir).sort(), ['05-other.conflist', '10-berth.conf']);
  t.deepEqual(uninstallCni(n.opts), [], 'a second uninstall finds nothing to do');
});

test('install without the conflist: the plugin only, and a conflist of ours left behind is removed; others stay', (t) => {
  const n = node(t);
  installCni(n.opts); // an earlier install that wrote it
  writeFileSync(join(n.confDir, '05-other.conflist'), '{}');
  const out = installCni({ ...n.opts, conflist: false });
  t.deepEqual(out.written, []);
  t.deepEqual(out.removed, [join(n.confDir, CONFLIST_NAME)]);
  t.deepEqual(readdirSync(n.confDir), ['05-other.conflist']);
  t.is(statSync(join(n.binDir, 'berth')).mode & 0o7777, 0o755);
  t.deepEqual(installCni({ ...n.opts, conflist: false }).removed, [], 'a rerun finds nothing to do');
});
