import test from 'ava';
import fc from 'fast-check';
import { ExpiryQueue, type Due } from './expiry-queue';

const due = (at: number, ip: string, mod = '1'): Due => ({ at, pool: 'p', ip, mod });

test('pops exactly the due entries, earliest first, and keeps the rest', (t) => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 1000 })), fc.integer({ min: 0, max: 1000 }), (ats, now) => {
    const q = new ExpiryQueue();
    ats.forEach((at, i) => q.push(due(at, String(i))));
    const popped = q.popDue(now, () => true).map((d) => d.at);
    const expected = ats.filter((a) => a <= now).sort((a, b) => a - b);
    t.deepEqual(popped, expected);
    t.is(q.size, ats.length - expected.length);
    const rest = q.popDue(Infinity, () => true).map((d) => d.at);
    t.deepEqual(rest, ats.filter((a) => a > now).sort((a, b) => a - b));
  }));
});

test('stale entries are dropped, not returned, and compact() removes them early', (t) => {
  const q = new ExpiryQueue();
  q.push(due(10, 'a', '1'));
  q.push(due(20, 'a', '2'));
  q.push(due(5, 'b', '7'));
  const current: Record<string, string> = { a: '2', b: '7' };
  const live = (d: Due) => current[d.ip] === d.mod;
  t.deepEqual(q.popDue(15, live).map((d) => d.ip), ['b']);
  q.push(due(30, 'c', '1'));
  q.compact((d) => d.ip !== 'c');
  t.is(q.size, 1);
  t.deepEqual(q.popDue(100, live).map((d) => `${d.ip}@${d.mod}`), ['a@2']);
  t.is(q.peek(), undefined);
});
