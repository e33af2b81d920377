import test from 'ava';
import type * as http from 'node:http';
import { readYourWrites } from './api';

/** A view at `revision` whose caughtUp resolves when moveTo reaches the asked revision. */
function view(revision: bigint) {
  const waiters: { rev: bigint; resolve: () => void }[] = [];
  return {
    revision,
    waiters,
    caughtUp(rev: bigint) {
      if (this.revision >= rev) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ rev, resolve }));
    },
    moveTo(rev: bigint) {
      this.revision = rev;
      for (const w of waiters.splice(0)) if (w.rev <= rev) w.resolve(); else waiters.push(w);
    },
  };
}

const req = (method: string, header?: string) => ({ method, headers: header === undefined ? {} : { 'berth-min-revision': header } }) as unknown as http.IncomingMessage;

test('a read naming a revision the view has not reached waits for it', async (t) => {
  const v = view(10n);
  let done = false;
  const p = readYourWrites(req('GET', '12'), v).then(() => { done = true; });
  await new Promise((r) => setImmediate(r));
  t.false(done);
  v.moveTo(11n);
  await new Promise((r) => setImmediate(r));
  t.false(done, 'still behind');
  v.moveTo(12n);
  await p;
  t.true(done);
});

test('no wait: a revision already seen, writes, malformed or absurd values, no header', async (t) => {
  const v = view(10n);
  for (const r of [req('GET', '10'), req('GET', '3'), req('POST', '99'), req('GET', 'abc'), req('GET', '-1'), req('GET', String(10n + 2_000_000n)), req('GET')]) {
    await readYourWrites(r, v);
  }
  t.is(v.waiters.length, 0, 'nothing left waiting in the view');
});
