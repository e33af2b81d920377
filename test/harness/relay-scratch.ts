/**
 * The set-up the relay tests share: the built relay, a scratch directory and
 * one network namespace of the test's own (named by label and pid), both
 * removed after the file's tests. Registers ava hooks; read the fields after
 * `test.before` has run.
 */
import type { TestFn } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureRelay } from '../../sim/exec';

export interface RelayScratch {
  /** Path of the test's own network namespace. */
  netns: string;
  scratch: string;
}

export function relayScratch(test: TestFn, label: string): RelayScratch {
  const name = `berth-${label}-${process.pid}`;
  const s: RelayScratch = { netns: '', scratch: '' };
  test.before(async () => {
    await ensureRelay();
    s.scratch = mkdtempSync(join(tmpdir(), `berth-${label}-`));
    execFileSync('ip', ['netns', 'add', name]);
    s.netns = `/run/netns/${name}`;
  });
  test.after.always(() => {
    if (s.netns) execFileSync('ip', ['netns', 'del', name]);
    if (s.scratch) rmSync(s.scratch, { recursive: true, force: true });
  });
  return s;
}
