import test from 'ava';
import fc from 'fast-check';
import { parseCidr, contains, offsetOf } from '../common/cidr';
import { capacity, checkRequested, chooseFree, ipAt, poolSpace } from './allocator';

test('a /24 reserves network, broadcast and gateway', (t) => {
  const space = poolSpace(parseCidr('198.18.1.0/24'), '198.18.1.1', []);
  t.is(capacity(space), 253n);
  const all = chooseFree(space, new Set(), 1000, 0n).map((o) => ipAt(space, o));
  t.is(all.length, 253);
  t.false(all.includes('198.18.1.0'));
  t.false(all.includes('198.18.1.1'));
  t.false(all.includes('198.18.1.255'));
});

test('operator-reserved addresses are never chosen', (t) => {
  const space = poolSpace(parseCidr('198.18.2.0/29'), '198.18.2.1', ['198.18.2.2', '198.18.2.3']);
  t.deepEqual(chooseFree(space, new Set(), 10, 0n).map((o) => ipAt(space, o)), ['198.18.2.4', '198.18.2.5', '198.18.2.6']);
});

test('an IPv6 pool allocates too', (t) => {
  const space = poolSpace(parseCidr('fd00:b:e:1::/120'), 'fd00:b:e:1::1', []);
  const [off] = chooseFree(space, new Set(), 1, 0n);
  t.is(ipAt(space, off), 'fd00:b:e:1::2');
});

test('requested addresses outside the pool or reserved are refused', (t) => {
  const space = poolSpace(parseCidr('198.18.3.0/24'), '198.18.3.1', []);
  t.is(t.throws(() => checkRequested(space, '198.18.4.7'))?.message, 'address is outside pool 198.18.3.0/24');
  t.is(t.throws(() => checkRequested(space, '198.18.3.1'))?.message, 'address is reserved in this pool');
  t.is(checkRequested(space, '198.18.3.7').ip, '198.18.3.7');
});

test('property: chosen offsets are distinct, free, inside the pool, and as many as exist', (t) => {
  fc.assert(fc.property(
    fc.integer({ min: 22, max: 30 }), fc.array(fc.nat(1023), { maxLength: 300 }), fc.nat(2000), fc.bigInt(0n, 5000n),
    (prefix, takenRaw, count, start) => {
      const net = parseCidr(`198.18.8.0/${prefix}`);
      const space = poolSpace(net, ipAt({ net, reserved: new Set() }, 1n), []);
      const taken = new Set(takenRaw.map((n) => BigInt(n) % net.size));
      const got = chooseFree(space, taken, count, start);
      const free = [...Array(Number(net.size)).keys()].map(BigInt).filter((o) => !taken.has(o) && !space.reserved.has(o));
      if (new Set(got).size !== got.length) return false;
      if (got.some((o) => taken.has(o) || space.reserved.has(o) || !contains(net, ipAt(space, o)))) return false;
      return got.length === Math.min(count, free.length);
    }));
  t.pass();
});

test('property: allocating one by one never hands an address out twice', (t) => {
  fc.assert(fc.property(fc.integer({ min: 24, max: 28 }), fc.bigInt(0n, 300n), (prefix, start) => {
    const net = parseCidr(`198.18.9.0/${prefix}`);
    const space = poolSpace(net, '198.18.9.1', []);
    const taken = new Set<bigint>();
    let cursor = start;
    for (;;) {
      const [o] = chooseFree(space, taken, 1, cursor);
      if (o === undefined) break;
      if (taken.has(o)) return false;
      taken.add(o);
      cursor = o + 1n;
    }
    return BigInt(taken.size) === capacity(space) && [...taken].every((o) => offsetOf(net, ipAt(space, o)) === o);
  }));
  t.pass();
});
