import test from 'ava';
import type { LeaseEvent, LeaseView, PoolUsage } from '../../common/api';
import { BerthError } from '../../common/errors';
import {
  age, block, compareIp, describeAt, errorLine, historyTable, hostsTable, leaseDetail, leasesTable, poolDetail, poolsTable, shortTime,
  statusText, table, usedPercent,
} from './format';

const NOW = Date.parse('2026-11-23T10:00:00.000Z');

const bound: LeaseView = {
  pool: 'web', ip: '198.18.3.7', identity: 'k8s/shop/web-0', state: 'bound', pinned: false,
  binding: { host: 'node-a', containerId: '4f1c2d3e4f5a6b7c8d9e', ifName: 'eth0', boundAt: '2026-11-23T07:00:00.123Z' },
  lastBinding: { host: 'node-b', containerId: 'aa11', ifName: 'eth0', boundAt: '2026-11-22T13:40:00.000Z' },
  createdAt: '2026-11-22T13:40:00.000Z', updatedAt: '2026-11-23T07:00:00.123Z', revision: '812',
};
const held: LeaseView = {
  pool: 'web', ip: '198.18.3.10', identity: 'k8s/shop/web-1', state: 'held', pinned: false,
  heldUntil: '2026-11-23T10:40:00.000Z', createdAt: '2026-11-22T13:40:00.000Z', updatedAt: '2026-11-23T09:40:00.000Z', revision: '900',
};
const pinned: LeaseView = { ...held, ip: '198.18.3.9', identity: 'k8s/shop/db-0', pinned: true, heldUntil: undefined, revision: '901' };

test('table pads every column to its widest cell and trims line ends', (t) => {
  t.is(table(['A', 'LONG'], [['xyz', '1'], ['q', '']]), 'A    LONG\nxyz  1\nq\n');
  t.is(table(['ONLY'], []), 'ONLY\n');
});

test('block aligns values after the labels', (t) => {
  t.is(block([['IP', '1'], ['Identity', 'x']]), 'IP:        1\nIdentity:  x\n');
});

test('times print as UTC to the second; ages are coarse', (t) => {
  t.is(shortTime('2026-11-23T07:00:00.123Z'), '2026-11-23T07:00:00Z');
  t.is(shortTime(undefined), '-');
  t.is(age('2026-11-23T07:00:00.000Z', NOW), '3h ago');
  t.is(age('2026-11-23T09:59:15.000Z', NOW), '45s ago');
  t.is(age('2026-11-23T10:40:00.000Z', NOW), 'in 40m');
  t.is(age('2026-11-20T08:10:00.000Z', NOW), '3d1h ago');
});

test('IPv4 sorts numerically, before IPv6', (t) => {
  t.deepEqual(['198.18.3.10', 'fd00::1', '198.18.3.9', '10.0.0.1'].sort(compareIp), ['10.0.0.1', '198.18.3.9', '198.18.3.10', 'fd00::1']);
});

test('leases table: one row per lease, sorted, short container ids', (t) => {
  t.is(leasesTable([held, bound, pinned]), [
    'IP           POOL  IDENTITY        STATE  HOST    CONTAINER     SINCE                 PINNED  EXPIRES',
    '198.18.3.7   web   k8s/shop/web-0  bound  node-a  4f1c2d3e4f5a  2026-11-23T07:00:00Z  no      -',
    '198.18.3.9   web   k8s/shop/db-0   held   -       -             2026-11-23T09:40:00Z  yes     never',
    '198.18.3.10  web   k8s/shop/web-1  held   -       -             2026-11-23T09:40:00Z  no      2026-11-23T10:40:00Z',
    '',
  ].join('\n'));
});

test('lease detail names holder, host, container, fencing revision and last binding', (t) => {
  const text = leaseDetail(bound, NOW);
  t.regex(text, /^IP:\s+198\.18\.3\.7$/m);
  t.regex(text, /^Identity:\s+k8s\/shop\/web-0$/m);
  t.regex(text, /^Container:\s+4f1c2d3e4f5a6b7c8d9e$/m);
  t.regex(text, /^Since:\s+2026-11-23T07:00:00Z \(3h ago\)$/m);
  t.regex(text, /^Held until:\s+-$/m);
  t.regex(text, /^Fencing revision:\s+812$/m);
  t.regex(text, /^Last binding:\s+host node-b, container aa11, interface eth0, bound 2026-11-22T13:40:00Z$/m);
  t.regex(text, /^Network:\s+not recorded$/m, 'a binding from before the network was recorded');
  t.regex(leaseDetail({ ...bound, binding: { ...bound.binding!, network: 'berth' } }, NOW), /^Network:\s+berth$/m);
  t.regex(leaseDetail(held, NOW), /^Network:\s+-$/m);
  t.regex(leaseDetail(held, NOW), /^Held until:\s+2026-11-23T10:40:00Z \(in 40m\)$/m);
  t.regex(leaseDetail(pinned, NOW), /^Held until:\s+never$/m);
});

const pool: PoolUsage = {
  name: 'web', cidr: '198.18.0.0/16', gateway: '198.18.0.1', reserved: [], holdSeconds: 3600, createdAt: '2026-11-01T00:00:00.000Z',
  size: 65533, bound: 1200, held: 40, pinned: 3, free: 64293,
};

test('utilisation percent', (t) => {
  t.is(usedPercent(pool), '1.9%');
  t.is(usedPercent({ ...pool, free: pool.size }), '0%');
  t.is(usedPercent({ ...pool, free: pool.size - 2 }), '<0.1%');
  t.is(usedPercent({ ...pool, free: 0 }), '100%');
  t.is(usedPercent({ ...pool, size: 0, free: 0 }), '0%');
});

test('pools table and detail', (t) => {
  t.is(poolsTable([pool]), [
    'NAME  CIDR           GATEWAY     SIZE   BOUND  HELD  PINNED  FREE   USED  HOLD',
    'web   198.18.0.0/16  198.18.0.1  65533  1200   40    3       64293  1.9%  1h',
    '',
  ].join('\n'));
  const d = poolDetail(pool);
  t.regex(d, /^Used:\s+1\.9% \(1240 of 65533\)$/m);
  t.regex(d, /^Hold:\s+1h \(3600s\)$/m);
  t.regex(d, /^Reserved:\s+-$/m);
});

test('hosts table', (t) => {
  const text = hostsTable([{ name: 'node-a', underlayIp: '10.0.0.11', vtepMac: '02:42:0a:00:00:0b', vni: 4242, pool: 'web', registeredAt: '2026-11-23T08:00:00Z', leases: 12, alive: true }]);
  t.is(text.split('\n')[1], 'node-a  10.0.0.11  02:42:0a:00:00:0b  4242  web   12      2026-11-23T08:00:00Z  alive');
});

test('hosts table shows absence and death', (t) => {
  const h = { name: 'node-b', underlayIp: '10.0.0.12', vtepMac: '02:42:0a:00:00:0c', vni: 4242, pool: 'web', registeredAt: '2026-11-23T08:00:00Z', leases: 3, alive: false };
  const rows = hostsTable([
    { ...h, absent: { since: '2026-11-23T09:00:00Z', deadAt: '2026-11-23T09:05:00Z' } },
    { ...h, name: 'node-c', dead: { at: '2026-11-23T09:06:00Z', by: 'reaper', reason: 'x' } },
    { ...h, name: 'node-d' },
  ]).split('\n');
  t.regex(rows[1], /absent since 2026-11-23T09:00:00Z, dead at 2026-11-23T09:05:00Z$/);
  t.regex(rows[2], /dead since 2026-11-23T09:06:00Z, freeing leases$/);
  t.regex(rows[3], /absent$/);
});

const ev = (at: string, kind: LeaseEvent['kind'], oldState: LeaseEvent['oldState'], newState: LeaseEvent['newState'], host?: string, containerId?: string): LeaseEvent =>
  ({ at, kind, pool: 'web', ip: '198.18.3.7', identity: 'k8s/shop/web-0', oldState, newState, host, containerId, actor: host });

test('history table shows transitions', (t) => {
  const text = historyTable([ev('2026-11-22T13:40:00.000Z', 'allocated', 'free', 'bound', 'node-b', 'aa11')]);
  t.is(text.split('\n')[1], '2026-11-22T13:40:00Z  allocated  198.18.3.7  web   k8s/shop/web-0  node-b  aa11       free->bound  node-b');
});

test('describeAt answers who had the address at that instant', (t) => {
  const at = '2026-11-22T14:02:00.000Z';
  t.is(describeAt('198.18.3.7', at, [ev('2026-11-22T13:40:00.000Z', 'allocated', 'free', 'bound', 'node-b', 'aa11')]),
    '198.18.3.7 at 2026-11-22T14:02:00Z: bound to k8s/shop/web-0 on host node-b, container aa11 (pool web; allocated 2026-11-22T13:40:00Z)\n');
  t.regex(describeAt('198.18.3.7', at, [ev('2026-11-22T13:50:00.000Z', 'released', 'bound', 'held', 'node-b', 'aa11')]),
    /: held for k8s\/shop\/web-0, no container attached \(pool web; released 2026-11-22T13:50:00Z, last on host node-b\)\n$/);
  t.regex(describeAt('198.18.3.7', at, [ev('2026-11-22T13:55:00.000Z', 'expired', 'held', 'free')]), /: free \(pool web; expired .*, previously k8s\/shop\/web-0\)\n$/);
  t.is(describeAt('198.18.3.7', at, []), '198.18.3.7 at 2026-11-22T14:02:00Z: no lease recorded at or before that time\n');
  t.regex(describeAt('198.18.3.7', '2026-11-22T14:02:00.250Z', []), /^198\.18\.3\.7 at 2026-11-22T14:02:00\.250Z: /);
});

const ctx = { controller: 'http://127.0.0.1:7480', tokenGiven: false };

test('errors become one line with the table\'s exit code', (t) => {
  t.deepEqual(errorLine(new BerthError('LeaseNotFound', '198.18.9.9'), ctx), { line: 'berthctl: no such lease: 198.18.9.9', exitCode: 3 });
  t.deepEqual(errorLine(new BerthError('PoolExists', 'web'), ctx), { line: 'berthctl: pool already exists: web', exitCode: 4 });
  t.deepEqual(errorLine(new BerthError('Unauthorized'), ctx),
    { line: 'berthctl: missing or invalid bearer token (pass --token-file or set BERTH_TOKEN_FILE)', exitCode: 6 });
  t.deepEqual(errorLine(new BerthError('Unauthorized'), { ...ctx, tokenGiven: true }), { line: 'berthctl: missing or invalid bearer token', exitCode: 6 });
  t.deepEqual(errorLine(new BerthError('InvalidRequest', 'a\nb', 'bad\nthing'), ctx), { line: 'berthctl: bad thing: a b', exitCode: 2 });
});

test('an unreachable controller names the URL and the reason', (t) => {
  const e = new BerthError('TryAgainLater', 'http://127.0.0.1:7480: connect ECONNREFUSED 127.0.0.1:7480', 'controller unreachable');
  t.deepEqual(errorLine(e, ctx), { line: 'berthctl: controller unreachable at http://127.0.0.1:7480 (connect ECONNREFUSED 127.0.0.1:7480)', exitCode: 5 });
});

test('a foreign error is internal, exit 1, still one line', (t) => {
  t.deepEqual(errorLine(new TypeError('x is undefined\n  at foo'), ctx), { line: 'berthctl: internal error: x is undefined at foo', exitCode: 1 });
});

test('status: hosts with liveness and pass age, pools, attention with the overflow counted', (t) => {
  const text = statusText({
    at: '', attentionTotal: 3,
    hosts: [
      { name: 'a', pool: 'web', underlayIp: '10.0.0.1', alive: true, liveness: 'alive', lastPassAt: '2026-11-23T09:59:48Z', leases: 2 },
      { name: 'b', pool: 'web', underlayIp: '10.0.0.2', alive: false, liveness: 'absent', deadAt: '2026-11-23T10:05:00Z', leases: 1 },
    ],
    pools: [{ name: 'web', cidr: '198.18.3.0/24', gateway: '198.18.3.1', reserved: [], holdSeconds: 60, createdAt: '', size: 253, bound: 3, held: 0, pinned: 0, free: 250 }],
    attention: [{ pool: 'web', ip: '198.18.3.9', identity: 'x', state: 'bound', pinned: true, host: 'b', reason: 'host-absent' }],
  }, NOW);
  t.is(text, [
    'HOST  AGENT                                 LAST PASS  POOL  UNDERLAY  LEASES',
    'a     alive                                 12s ago    web   10.0.0.1  2',
    'b     absent, dead at 2026-11-23T10:05:00Z  -          web   10.0.0.2  1',
    '',
    'POOL  CIDR           SIZE  BOUND  HELD  PINNED  FREE  USED',
    'web   198.18.3.0/24  253   3      0     0       250   1.2%',
    '',
    'IP          POOL  IDENTITY  STATE          HOST  WHY',
    '198.18.3.9  web   x         bound, pinned  b     host-absent',
    '... and 2 more',
    '',
  ].join('\n'));
  t.is(statusText({ at: '', hosts: [], pools: [], attention: [], attentionTotal: 0 }, NOW), 'no hosts registered\n\nno pools\n\nno lease needs attention\n');
});
