import test from 'ava';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentRequest } from './agent-protocol';
import { appendDel, journalId, pruneStaleTemp, readDelJournal, removeDelEntry, removeDelEntryIfUnchanged } from './del-journal';
import { isBerthError } from './errors';

const del = (containerId: string, ifName = 'eth0'): AgentRequest => ({ verb: 'DEL', containerId, netns: '', ifName, args: {}, network: 'berth', pool: 'p' });

function tmp(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'berth-journal-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return join(d, 'journal');
}

test('append creates the dir, read returns entries oldest first, remove is idempotent', async (t) => {
  const dir = tmp(t);
  t.deepEqual(await readDelJournal(dir), { entries: [], corrupt: [] });
  let clock = Date.parse('2030-01-01T00:00:00Z');
  const now = () => new Date(clock++);
  const a = await appendDel(dir, del('a'), { now });
  const b = await appendDel(dir, del('b'), { now });
  const { entries, corrupt } = await readDelJournal(dir);
  t.deepEqual(corrupt, []);
  t.deepEqual(entries.map((e) => e.request.containerId), ['a', 'b']);
  t.deepEqual(entries[0], a);
  await removeDelEntry(dir, a.id);
  await removeDelEntry(dir, a.id);
  t.deepEqual((await readDelJournal(dir)).entries, [b]);
});

test('a repeated DEL for the same attachment replaces its entry', async (t) => {
  const dir = tmp(t);
  await appendDel(dir, del('a'));
  await appendDel(dir, del('a'));
  await appendDel(dir, del('a', 'net1'));
  t.is((await readDelJournal(dir)).entries.length, 2);
  t.is(journalId(del('a')), journalId({ pool: 'p', containerId: 'a', ifName: 'eth0' }));
  t.not(journalId(del('a')), journalId(del('a', 'net1')));
});

test('an entry file is named by two FNV-1a 64 hashes of pool NUL containerId NUL ifName, as the relay (C) names it', async (t) => {
  const dir = tmp(t);
  // Computed by cni/relay/journal.c relay_journal_id("p", "a", "eth0"); test/cni-relay.test.ts checks the two agree on live entries.
  const want = 'del-f6ae0fa5e004f50d5b5c9fe8ac0cc5e2';
  t.is(journalId(del('a')), want);
  const e = await appendDel(dir, del('a'));
  t.is(e.id, want);
  t.deepEqual(readdirSync(dir), [`${want}.json`]);
});

test('bounded: a full journal refuses new attachments with TryAgainLater but accepts repeats', async (t) => {
  const dir = tmp(t);
  await appendDel(dir, del('a'), { maxEntries: 2 });
  await appendDel(dir, del('b'), { maxEntries: 2 });
  const e = await t.throwsAsync(appendDel(dir, del('c'), { maxEntries: 2 }));
  t.true(isBerthError(e) && e.kind === 'TryAgainLater' && e.cniCode === 11);
  await t.notThrowsAsync(appendDel(dir, del('a'), { maxEntries: 2 }));
  const big = await t.throwsAsync(appendDel(dir, { ...del('d'), args: { X: 'y'.repeat(100) } }, { maxEntryBytes: 64 }));
  t.true(isBerthError(big) && big.kind === 'TryAgainLater');
});

test('only DEL can be journalled', async (t) => {
  const e = await t.throwsAsync(appendDel(tmp(t), { ...del('a'), verb: 'ADD' }));
  t.true(isBerthError(e) && e.kind === 'Internal');
});

test('corrupt files are reported, temp files are ignored and pruned', async (t) => {
  const dir = tmp(t);
  const a = await appendDel(dir, del('a'));
  writeFileSync(join(dir, 'del-0123456789abcdef0123456789abcdef.json'), '{"half');
  writeFileSync(join(dir, `.${a.id}.1.abcd.tmp`), '{"half');
  const { entries, corrupt } = await readDelJournal(dir);
  t.is(entries.length, 1);
  t.deepEqual(corrupt, ['del-0123456789abcdef0123456789abcdef']);
  t.is(await pruneStaleTemp(dir, 60_000, Date.now() + 120_000), 1);
  t.false(readdirSync(dir).some((n) => n.endsWith('.tmp')));
  await t.throwsAsync(removeDelEntry(dir, '../etc/passwd'));
});

test('removeDelEntryIfUnchanged keeps an entry re-journalled during replay', async (t) => {
  const dir = tmp(t);
  const first = await appendDel(dir, del('a'), { now: () => new Date(1000) });
  await appendDel(dir, del('a'), { now: () => new Date(2000) });
  t.false(await removeDelEntryIfUnchanged(dir, first));
  t.is((await readDelJournal(dir)).entries.length, 1);
  const [second] = (await readDelJournal(dir)).entries;
  t.true(await removeDelEntryIfUnchanged(dir, second));
  t.is((await readDelJournal(dir)).entries.length, 0);
});

test('an unwritable directory is IO (5)', async (t) => {
  if (process.getuid?.() === 0) {
    t.pass('root ignores directory permissions');
    return;
  }
  const dir = tmp(t);
  await appendDel(dir, del('a'));
  chmodSync(dir, 0o500);
  const e = await t.throwsAsync(appendDel(dir, del('b')));
  t.true(isBerthError(e) && e.kind === 'IO');
});
