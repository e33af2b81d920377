import test from 'ava';
import type { LeaseEvent } from '../common/records';
import { selectEvents } from './history';

const ev = (at: string, identity: string, ip = '198.18.3.7'): LeaseEvent =>
  ({ at, kind: 'bound', pool: 'default', ip, identity, oldState: 'free', newState: 'bound' });

const events = [
  ev('2026-11-22T09:00:00.000Z', 'k8s/a/x'),
  ev('2026-11-22T13:59:00.000Z', 'k8s/a/y'),
  ev('2026-11-22T14:05:00.000Z', 'k8s/a/z'),
];

test('at answers who had the address at an instant', (t) => {
  const [e] = selectEvents(events, { at: '2026-11-22T14:02:00Z' });
  t.is(e.identity, 'k8s/a/y');
});

test('since/until and limit bound the list', (t) => {
  t.is(selectEvents(events, { since: '2026-11-22T10:00:00Z' }).length, 2);
  t.is(selectEvents(events, { until: '2026-11-22T10:00:00Z' }).length, 1);
  t.deepEqual(selectEvents(events, { limit: 1 }).map((e) => e.identity), ['k8s/a/z']);
});

test('a bad time is a clear error', (t) => {
  t.is(t.throws(() => selectEvents(events, { at: 'yesterday-ish' }))?.message, 'at must be an ISO 8601 time');
});
