import { deepStrictEqual, ok } from 'node:assert';
import test from 'ava';
import fc from 'fast-check';
import type { Host, LeaseView } from '../common/records';
import { BRIDGE_NAME, VXLAN_NAME, desiredState, hostVethMacFor, localEndpoints, overlayMtu, vethNameFor, vtepMacFor, winningLeases, type DesiredInput } from './desired';
import { planChanges } from './plan';

const host = (name: string, n: number): Host => ({
  name,
  underlayIp: `198.19.0.${n}`,
  vtepMac: vtepMacFor(name),
  vni: 4242,
  pool: 'default',
  registeredAt: '2024-01-01T00:00:00Z',
});

function lease(ip: string, onHost: string | undefined, revision: string, pool = 'default'): LeaseView {
  return {
    pool,
    ip,
    identity: `id-${ip}-${revision}`,
    state: onHost ? 'bound' : 'held',
    pinned: false,
    ...(onHost ? { binding: { host: onHost, containerId: `c-${revision}`, ifName: 'eth0', boundAt: '' } } : {}),
    createdAt: '',
    updatedAt: '',
    revision,
  };
}

const base = (leases: LeaseView[], hosts = [host('a', 11), host('b', 12), host('c', 13)]): DesiredInput => ({
  self: 'a',
  hosts,
  leases,
  pool: { name: 'default', cidr: '198.18.0.0/16', gateway: '198.18.0.1' },
  underlayMtu: 1500,
});

test('local lease routes to the bridge, remote lease through the VTEP on-link', (t) => {
  const d = desiredState(base([lease('198.18.0.5', 'a', '10'), lease('198.18.0.6', 'b', '11')]));
  t.deepEqual(d.routes, [
    { dst: '198.18.0.5/32', dev: BRIDGE_NAME },
    { dst: '198.18.0.6/32', dev: VXLAN_NAME, via: '198.19.0.12', onlink: true, src: '198.19.0.11' },
  ]);
});

test('one neighbour and one FDB entry per remote host, none for self', (t) => {
  const d = desiredState(base([]));
  t.deepEqual(d.neighs.map((n) => n.ip), ['198.19.0.12', '198.19.0.13']);
  t.deepEqual(d.fdbs, [
    { dev: VXLAN_NAME, mac: vtepMacFor('b'), dst: '198.19.0.12' },
    { dev: VXLAN_NAME, mac: vtepMacFor('c'), dst: '198.19.0.13' },
  ]);
});

test('fencing: of two leases on one address the higher revision wins (as bigints)', (t) => {
  const d = desiredState(base([lease('198.18.0.5', 'b', '9'), lease('198.18.0.5', 'a', '10')]));
  t.deepEqual(d.routes, [{ dst: '198.18.0.5/32', dev: BRIDGE_NAME }]);
  const w = winningLeases([lease('198.18.0.5', 'a', '99999999999999999999'), lease('198.18.0.5', 'b', '100000000000000000000')]);
  t.is(w.get('198.18.0.5')!.binding!.host, 'b');
});

test('held leases, other pools and unregistered hosts get no route', (t) => {
  const d = desiredState(
    base([lease('198.18.0.5', undefined, '3'), lease('198.18.0.6', 'a', '4', 'other'), lease('198.18.0.7', 'ghost', '5')]),
  );
  t.deepEqual(d.routes, []);
});

test('devices: gateway on the bridge as /32, overlay MTU is underlay minus 50', (t) => {
  const d = desiredState(base([]));
  t.is(overlayMtu(1500), 1450);
  t.deepEqual(d.devices?.bridge, { name: BRIDGE_NAME, address: '198.18.0.1/32', mtu: 1450 });
  t.like(d.devices?.vxlan, { name: VXLAN_NAME, vni: 4242, local: '198.19.0.11', port: 4789, mtu: 1450 });
});

test('vtepMacFor is stable, unicast and locally administered', (t) => {
  t.is(vtepMacFor('node-1'), vtepMacFor('node-1'));
  t.not(vtepMacFor('node-1'), vtepMacFor('node-2'));
  const first = parseInt(vtepMacFor('x').slice(0, 2), 16);
  t.is(first & 1, 0);
  t.is(first & 2, 2);
});

test('property: every remote route has its neighbour and FDB entry; dsts are unique; result is stable', (t) => {
  const hostNames = ['a', 'b', 'c', 'd'];
  const leaseArb = fc.record({
    ip: fc.integer({ min: 2, max: 20 }).map((n) => `198.18.0.${n}`),
    on: fc.option(fc.constantFrom(...hostNames, 'ghost'), { nil: undefined }),
    rev: fc.bigInt({ min: 1n, max: 1000n }).map(String),
  });
  fc.assert(
    fc.property(fc.array(leaseArb, { maxLength: 30 }), fc.subarray(hostNames.slice(1)), (ls, others) => {
      const hosts = [host('a', 11), ...others.map((n) => host(n, 11 + hostNames.indexOf(n)))];
      const d = desiredState(base(ls.map((l) => lease(l.ip, l.on, l.rev)), hosts));
      const dsts = d.routes.map((r) => r.dst);
      ok(new Set(dsts).size === dsts.length, 'duplicate dst');
      for (const r of d.routes.filter((r) => r.via)) {
        const n = d.neighs.find((n) => n.ip === r.via);
        ok(n, `no neighbour for ${r.via}`);
        ok(d.fdbs.some((f) => f.mac === n.mac && f.dst === r.via), `no fdb for ${r.via}`);
      }
      deepStrictEqual(planChanges(d, desiredState(base(ls.map((l) => lease(l.ip, l.on, l.rev)), hosts))), []);
    }),
  );
  t.pass();
});

test('a host veth MAC is 0e:bf and its name\'s hash: locally administered unicast, one per name', (t) => {
  t.is(hostVethMacFor('bth0a1b2c3d'), '0e:bf:0a:1b:2c:3d');
  t.throws(() => hostVethMacFor('eth0'), { message: /not a berth veth name/ });
  fc.assert(fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (id, ifName) => {
    const m = hostVethMacFor(vethNameFor(id, ifName));
    const first = parseInt(m.slice(0, 2), 16);
    return (first & 0x02) === 0x02 && (first & 0x01) === 0 && m.slice(6).replace(/:/g, '') === vethNameFor(id, ifName).slice(3);
  }));
});

test('property: localEndpoints is exactly desiredState\'s locals (what ADD admits is what the passes program)', (t) => {
  const leaseArb = fc.record({
    ip: fc.integer({ min: 1, max: 12 }).map((n) => `198.18.0.${n}`),
    on: fc.option(fc.constantFrom('a', 'b', 'ghost'), { nil: undefined }),
    rev: fc.bigInt({ min: 1n, max: 1000n }).map(String),
    pool: fc.constantFrom('default', 'other'),
  });
  fc.assert(fc.property(fc.array(leaseArb, { maxLength: 30 }), (ls) => {
    const input = base(ls.map((l) => lease(l.ip, l.on, l.rev, l.pool)));
    deepStrictEqual(localEndpoints(input), desiredState(input).locals);
  }));
  t.pass();
});

test('vethNameFor: the same names from its memo, also past its bound (names are pinned: a new name would orphan existing veths)', (t) => {
  t.is(vethNameFor('abc', 'eth0'), 'bth2d0e111d');
  t.is(vethNameFor('abc', 'eth0'), 'bth2d0e111d');
  for (let i = 0; i < 20_000; i++) vethNameFor(`c${i}`, 'eth0'); // past the memo's bound: it starts over
  t.is(vethNameFor('abc', 'eth0'), 'bth2d0e111d');
  t.is(vethNameFor('c19999', 'eth0'), 'bthb9aba587');
});
