import test from 'ava';
import { Activity } from './activity';

test('settle resolves at once when idle, when the last request ends, or at the bound', async (t) => {
  const a = new Activity();
  await a.settle(10_000);
  let release!: () => void;
  const req = a.during(() => new Promise<void>((r) => { release = r; }));
  t.is(a.active, 1);
  let settled = false;
  const s = a.settle(10_000).then(() => { settled = true; });
  await new Promise((r) => setImmediate(r));
  t.false(settled, 'a request is in progress');
  release();
  await req;
  await s;
  t.true(settled);
  t.is(a.active, 0);

  const stuck = a.during(() => new Promise<void>(() => undefined));
  void stuck;
  await a.settle(5); // the bound: a wedged request never holds the caller for longer
  t.is(a.active, 1);
});

test('a failing request is counted out too', async (t) => {
  const a = new Activity();
  await t.throwsAsync(a.during(async () => { throw new Error('refused'); }));
  t.is(a.active, 0);
});

test('a settle that ran out leaves no waiter behind, even while requests keep going', async (t) => {
  const a = new Activity();
  void a.during(() => new Promise<void>(() => undefined));
  for (let i = 0; i < 20; i++) await a.settle(1);
  t.is(a.waiting, 0);
});
