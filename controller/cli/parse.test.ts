import test from 'ava';
import fc from 'fast-check';
import { formatDuration, parseDuration, parseInstant, parseIpList, parsePositiveInt } from './parse';

test('durations: bare seconds and unit sums', (t) => {
  t.is(parseDuration('3600'), 3600);
  t.is(parseDuration('0'), 0);
  t.is(parseDuration('90s'), 90);
  t.is(parseDuration('15m'), 900);
  t.is(parseDuration('1h'), 3600);
  t.is(parseDuration('1h30m'), 5400);
  t.is(parseDuration('2d'), 172800);
  t.is(parseDuration('1w'), 604800);
  t.is(parseDuration(' 1H '), 3600);
});

test('durations: anything else is InvalidRequest naming the text', (t) => {
  for (const bad of ['', 'h', '1q', '1h 30m', '-5', '1.5h', 'h1', '1hx']) {
    const e = t.throws(() => parseDuration(bad), undefined, bad) as { kind?: string; details?: string };
    t.is(e.kind, 'InvalidRequest');
    t.is(e.details, bad);
  }
});

test('formatDuration is the inverse of parseDuration', (t) => {
  t.is(formatDuration(0), '0s');
  t.is(formatDuration(5400), '1h30m');
  t.is(formatDuration(90061), '1d1h1m1s');
  fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (n) => parseDuration(formatDuration(n)) === n));
});

const NOW = new Date(2026, 10, 23, 9, 30, 0).getTime(); // local time, like the operator's terminal

test('instants: zoned ISO 8601 is exact', (t) => {
  t.is(parseInstant('2026-11-22T14:02:00Z', NOW), '2026-11-22T14:02:00.000Z');
  t.is(parseInstant('2026-11-22T14:02:00.250Z', NOW), '2026-11-22T14:02:00.250Z');
  t.is(parseInstant('2026-11-22T14:02+01:00', NOW), '2026-11-22T13:02:00.000Z');
  t.is(parseInstant('2026-11-22T14:02:00-0500', NOW), '2026-11-22T19:02:00.000Z');
});

test('instants: zone-less forms are local time', (t) => {
  t.is(parseInstant('2026-11-22 14:02', NOW), new Date(2026, 10, 22, 14, 2).toISOString());
  t.is(parseInstant('2026-11-22T14:02:30', NOW), new Date(2026, 10, 22, 14, 2, 30).toISOString());
  t.is(parseInstant('2026-11-22', NOW), new Date(2026, 10, 22).toISOString());
  t.is(parseInstant('14:02', NOW), new Date(2026, 10, 23, 14, 2).toISOString());
  t.is(parseInstant('today 08:00', NOW), new Date(2026, 10, 23, 8, 0).toISOString());
  t.is(parseInstant('yesterday 14:02', NOW), new Date(2026, 10, 22, 14, 2).toISOString());
  t.is(parseInstant('Yesterday 9:05:07', NOW), new Date(2026, 10, 22, 9, 5, 7).toISOString());
});

test('instants: yesterday crosses month and year boundaries', (t) => {
  const jan1 = new Date(2027, 0, 1, 3, 0).getTime();
  t.is(parseInstant('yesterday 23:59', jan1), new Date(2026, 11, 31, 23, 59).toISOString());
});

test('instants: now and "<duration> ago"', (t) => {
  t.is(parseInstant('now', NOW), new Date(NOW).toISOString());
  t.is(parseInstant('90m ago', NOW), new Date(NOW - 90 * 60_000).toISOString());
  t.is(parseInstant('1d ago', NOW), new Date(NOW - 86_400_000).toISOString());
});

test('instants: nonsense and impossible dates are refused, not guessed', (t) => {
  for (const bad of ['teatime', 'yesterday', '2026-02-31 10:00', '2026-13-01', '25:00', '14:60', 'x ago', '2026-11-22 14', '']) {
    const e = t.throws(() => parseInstant(bad, NOW), undefined, bad) as { kind?: string };
    t.is(e.kind, 'InvalidRequest', bad);
  }
});

test('address lists split on commas and accumulate across repeated flags', (t) => {
  t.deepEqual(parseIpList('198.18.40.250, 198.18.40.251'), ['198.18.40.250', '198.18.40.251']);
  t.deepEqual(parseIpList('fd00::1', ['198.18.40.9']), ['198.18.40.9', 'fd00::1']);
  t.is((t.throws(() => parseIpList('198.18.40.1,nope')) as { details?: string }).details, 'nope');
});

test('positive integers', (t) => {
  t.is(parsePositiveInt('5'), 5);
  for (const bad of ['0', '-1', '1.5', 'x', '']) t.throws(() => parsePositiveInt(bad), undefined, bad);
});
