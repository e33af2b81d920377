import test from 'ava';
import type { Host, HostAlive, LeaseView, PoolUsage } from '../common/records';
import { HOLD_GRACE_MS, STATUS_ATTENTION_MAX, summarizeStatus, type StatusInput } from './status';

const NOW = Date.parse('2026-01-02T03:04:05Z');
const host = (name: string, o: Partial<Host> = {}): Host => ({ name, underlayIp: '198.19.0.1', vtepMac: '02:00:00:00:00:01', vni: 4242, pool: 'p', registeredAt: '', ...o });
const bound = (ip: string, on: string, o: Partial<LeaseView> = {}): LeaseView => ({
  pool: 'p', ip, identity: `id-${ip}`, state: 'bound', binding: { host: on, containerId: 'c', ifName: 'eth0', at: '' }, createdAt: '', updatedAt: '', revision: '1', ...o,
} as LeaseView);
const held = (ip: string, heldUntilMs: number, o: Partial<LeaseView> = {}): LeaseView => ({
  pool: 'p', ip, identity: `id-${ip}`, state: 'held', heldUntil: new Date(heldUntilMs).toISOString(), createdAt: '', updatedAt: '', revision: '1', ...o,
} as LeaseView);
const pool = { name: 'p', cidr: '198.18.0.0/24', size: 253, bound: 0, held: 0, pinned: 0, free: 253 } as PoolUsage;
const input = (o: Partial<StatusInput>): StatusInput => ({ nowMs: NOW, hosts: [], alive: new Map(), pools: [pool], leases: [], ...o });
const alive = (...names: [string, string?][]) => new Map<string, HostAlive>(names.map(([n, last]) => [n, { host: n, since: '', ...(last ? { lastPassAt: last } : {}) }]));

test('hosts: liveness, lease counts and last pass age', (t) => {
  const s = summarizeStatus(input({
    hosts: [host('b', { absent: { since: '', deadAt: '2026-01-02T03:09:05Z' } }), host('a'), host('c', { dead: { at: '', by: 'reaper', reason: '' } })],
    alive: alive(['a', new Date(NOW - 12_400).toISOString()]),
    leases: [bound('198.18.0.2', 'a'), bound('198.18.0.3', 'a'), bound('198.18.0.4', 'b'), held('198.18.0.5', NOW + 1000)],
  }));
  t.deepEqual(s.hosts.map((h) => [h.name, h.liveness, h.leases, h.lastPassAgeSeconds]), [['a', 'alive', 2, 12], ['b', 'absent', 1, undefined], ['c', 'dead', 0, undefined]]);
  t.is(s.hosts[1].deadAt, '2026-01-02T03:09:05Z');
  t.is(s.at, new Date(NOW).toISOString());
});

test('leases needing attention, worst first, each for its reason', (t) => {
  const s = summarizeStatus(input({
    hosts: [host('up'), host('gone'), host('dying', { dead: { at: '', by: 'operator', reason: '' } }), host('other', { pool: 'q' })],
    alive: alive(['up'], ['other']),
    leases: [
      bound('198.18.0.2', 'up'),
      bound('198.18.0.3', 'gone'),
      bound('198.18.0.4', 'dying'),
      bound('198.18.0.5', 'nowhere'),
      bound('198.18.0.6', 'other'),
      held('198.18.0.7', NOW - HOLD_GRACE_MS - 1),
      held('198.18.0.8', NOW - HOLD_GRACE_MS + 1000),
      held('198.18.0.9', NOW - 10 * HOLD_GRACE_MS, { pinned: true }),
    ],
  }));
  t.deepEqual(s.attention.map((a) => [a.ip, a.reason]), [
    ['198.18.0.4', 'host-dead'], ['198.18.0.3', 'host-absent'], ['198.18.0.5', 'host-unknown'], ['198.18.0.6', 'host-serves-other-pool'], ['198.18.0.7', 'hold-lapsed'],
  ]);
  t.is(s.attentionTotal, 5);
});

test('attention is capped, the total is not', (t) => {
  const leases = Array.from({ length: STATUS_ATTENTION_MAX + 7 }, (_, i) => bound(`198.18.${i >> 8}.${i & 255}`, 'gone'));
  const s = summarizeStatus(input({ hosts: [host('gone')], leases }));
  t.is(s.attention.length, STATUS_ATTENTION_MAX);
  t.is(s.attentionTotal, STATUS_ATTENTION_MAX + 7);
});
