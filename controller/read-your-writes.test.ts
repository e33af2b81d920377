import test from 'ava';
import type * as http from 'node:http';
import { readYourWrites } from './api';
import { RevisionWaiters } from './revision-waiters';

const req = (method: string, header?: string) => ({ method, headers: header === undefined ? {} : { 'berth-min-revision': header } }) as unknown as http.IncomingMessage;

test('a read naming a revision the view has not reached waits for it', async (t) => {
  const v = new RevisionWaiters();
  v.seen(10n);
  let done = false;
  const p = readYourWrites(req('GET', '12'), v).then(() => { done = true; });
  await new Promise((r) => setImmediate(r));
  t.false(done);
  v.seen(11n);
  await new Promise((r) => setImmediate(r));
  t.false(done, 'still behind');
  v.seen(12n);
  await p;
  t.true(done);
  t.is(v.pending, 0);
});

test('no wait: a revision already seen, writes, malformed or absurd values, no header', async (t) => {
  const v = new RevisionWaiters();
  v.seen(10n);
  for (const r of [req('GET', '10'), req('GET', '3'), req('POST', '99'), req('GET', 'abc'), req('GET', '-1'), req('GET', String(10n + 2_000_000n)), req('GET')]) {
    await readYourWrites(r, v);
  }
  t.is(v.pending, 0, 'nothing left waiting in the view');
});

test('a bounded wait that runs out leaves no waiter behind; caughtUp still waits for good', async (t) => {
  const v = new RevisionWaiters();
  v.seen(5n);
  t.false(await v.caughtUpWithin(9n, 5));
  t.is(v.pending, 0, 'the timed-out waiter is gone');
  t.true(await v.caughtUpWithin(5n, 5));
  const later = v.caughtUp(7n);
  t.is(v.pending, 1);
  v.seen(6n);
  t.is(v.pending, 1);
  v.seen(8n);
  await later;
  t.is(v.pending, 0);
  v.seen(3n);
  t.is(v.revision, 8n, 'the revision never goes back');
});
