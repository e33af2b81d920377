import test from 'ava';
import fc from 'fast-check';
import { overlaps, parseCidr } from '../common/cidr';
import { isBerthError } from '../common/errors';
import type { Host, Pool } from '../common/records';
import { checkPoolFits, poolFromRequest, updatedPool } from './pool-rules';

const NOW = '2026-11-26T00:00:00.000Z';

function refused(t: any, f: () => unknown, kind: string, re: RegExp, what: string): void {
  const e = t.throws(f, undefined, what);
  t.true(isBerthError(e), what);
  if (isBerthError(e)) {
    t.is(e.kind, kind, what);
    t.regex(`${e.message}: ${e.details}`, re, what);
  }
}

test('prefixes that cannot be pools are refused, naming why', (t) => {
  const cases: [string, RegExp][] = [
    ['0.0.0.0/0', /cannot overlap 0\.0\.0\.0\/8/],
    ['198.0.0.0/1', /cannot overlap 169\.254\.0\.0\/16/],
    ['127.0.0.0/8', /loopback/],
    ['127.5.0.0/24', /loopback/],
    ['169.254.10.0/24', /link-local/],
    ['224.0.0.0/4', /multicast/],
    ['239.1.2.0/24', /multicast/],
    ['240.0.0.0/4', /reserved and broadcast/],
    ['255.255.255.255/32', /reserved and broadcast/],
    ['0.0.0.0/8', /this network/],
    ['198.18.7.0/31', /\/31 is too long/],
    ['198.18.7.4/32', /\/32 is too long/],
    ['fd00::/64', /IPv6 pools are not supported/],
    ['fd00:b:e:1::/120', /IPv6/],
  ];
  for (const [cidr, re] of cases) refused(t, () => poolFromRequest({ name: 'p', cidr }, NOW), 'InvalidRequest', re, cidr);
});

test('gateway and reserved addresses must be inside and neither network nor broadcast', (t) => {
  const cases: [Partial<{ gateway: string; reserved: string[] }>, RegExp][] = [
    [{ gateway: '198.18.7.0' }, /gateway is the network address/],
    [{ gateway: '198.18.7.255' }, /gateway is the broadcast address/],
    [{ gateway: '10.0.0.1' }, /gateway is outside 198\.18\.7\.0\/24/],
    [{ gateway: 'nope' }, /gateway must be an IP address/],
    [{ reserved: ['198.18.7.255'] }, /reserved address is the broadcast address/],
    [{ reserved: ['198.18.8.1'] }, /reserved address is outside/],
  ];
  for (const [o, re] of cases) refused(t, () => poolFromRequest({ name: 'p', cidr: '198.18.7.0/24', ...o }, NOW), 'InvalidRequest', re, JSON.stringify(o));
  t.like(poolFromRequest({ name: 'p', cidr: '198.18.7.0/30' }, NOW), { cidr: '198.18.7.0/30', gateway: '198.18.7.1' });
  t.like(poolFromRequest({ name: 'p', cidr: '198.18.7.9/24', holdPolicy: 'explicit-only' }, NOW), { cidr: '198.18.7.0/24', holdPolicy: 'explicit-only', holdSeconds: 3600 });
  refused(t, () => poolFromRequest({ name: 'p', cidr: '198.18.7.0/24', holdPolicy: 'some' as never }, NOW), 'InvalidRequest', /holdPolicy must be one of all, explicit-only/, 'policy');
});

const pool = (name: string, cidr: string): Pool => ({ name, cidr, gateway: '', reserved: [], holdSeconds: 0, createdAt: NOW });
const host = (name: string, underlayIp: string): Host => ({ name, underlayIp, vtepMac: '', vni: 1, pool: 'x', registeredAt: NOW });

test('a pool overlapping another pool or holding a host underlay address is PoolOverlap', (t) => {
  const others = [pool('a', '198.18.0.0/24'), pool('b', '198.18.4.0/22')];
  refused(t, () => checkPoolFits(pool('n', '198.18.0.128/25'), others, []), 'PoolOverlap', /overlaps pool a \(198\.18\.0\.0\/24\)/, 'inside');
  refused(t, () => checkPoolFits(pool('n', '198.18.0.0/16'), others, []), 'PoolOverlap', /overlaps pool a/, 'around');
  refused(t, () => checkPoolFits(pool('n', '198.18.6.0/24'), others, []), 'PoolOverlap', /overlaps pool b/, 'b');
  t.notThrows(() => checkPoolFits(pool('n', '198.18.1.0/24'), others, []));
  refused(t, () => checkPoolFits(pool('n', '198.19.0.0/24'), others, [host('node-a', '198.19.0.11')]), 'PoolOverlap', /underlay address 198\.19\.0\.11 of host node-a/, 'host');
});

test('property: checkPoolFits refuses exactly the pools that share an address with another', (t) => {
  const net = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 16, max: 30 }))
    .map(([third, prefix]) => parseCidr(`198.18.${third}.0/${prefix}`).cidr);
  fc.assert(fc.property(fc.array(net, { maxLength: 6 }), net, (existing, cand) => {
    const others = existing.map((c, i) => pool(`p${i}`, c));
    const shares = existing.some((c) => {
      const a = parseCidr(c), b = parseCidr(cand);
      // Brute force on the /16 they all live in: some address in both.
      for (let n = 0n; n < 65536n; n += 4n) {
        const ip = 0xc6120000n + n;
        if (ip >= a.base && ip < a.base + a.size && ip >= b.base && ip < b.base + b.size) return true;
      }
      return false;
    });
    let threw = false;
    try { checkPoolFits(pool('new', cand), others, []); } catch (e) { threw = isBerthError(e) && e.kind === 'PoolOverlap'; }
    return threw === shares && shares === existing.some((c) => overlaps(parseCidr(c), parseCidr(cand)));
  }), { numRuns: 200 });
  t.pass();
});

test('only hold settings change on a live pool', (t) => {
  const p = poolFromRequest({ name: 'p', cidr: '198.18.7.0/24' }, NOW);
  t.like(updatedPool(p, { holdSeconds: 60 }), { holdSeconds: 60, cidr: '198.18.7.0/24' });
  t.like(updatedPool(p, { holdPolicy: 'explicit-only' }), { holdSeconds: 3600, holdPolicy: 'explicit-only' });
  refused(t, () => updatedPool(p, { cidr: '10.0.0.0/8' } as never), 'InvalidRequest', /only holdSeconds and holdPolicy/, 'cidr');
  refused(t, () => updatedPool(p, { holdSeconds: -1 }), 'InvalidRequest', /non-negative integer/, 'negative');
});
