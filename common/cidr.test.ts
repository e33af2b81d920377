import test from 'ava';
import fc from 'fast-check';
import { addressAt, canonicalIp, contains, offsetOf, parseCidr } from './cidr';

test('parseCidr clears host bits and sizes the network', (t) => {
  const n = parseCidr('198.18.3.7/16');
  t.is(n.cidr, '198.18.0.0/16');
  t.is(n.size, 65536n);
  t.is(parseCidr('fd00::5/64').cidr, 'fd00::/64');
});

test('bad CIDRs are clear errors', (t) => {
  for (const bad of ['198.18.0.0', '198.18.0.0/33', 'nope/8', '']) t.throws(() => parseCidr(bad), undefined, bad);
});

test('canonical IPv6 form', (t) => {
  t.is(canonicalIp('fd00:0:0:0:0:0:0:1'), 'fd00::1');
});

test('property: offset and address are inverses inside the network', (t) => {
  fc.assert(fc.property(fc.integer({ min: 8, max: 32 }), fc.nat(), (prefix, n) => {
    const net = parseCidr(`198.18.0.0/${prefix}`);
    const off = BigInt(n) % net.size;
    const ip = addressAt(net, off);
    return contains(net, ip) && offsetOf(net, ip) === off;
  }));
  t.pass();
});
