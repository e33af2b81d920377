import test from 'ava';
import fc from 'fast-check';
import { BRIDGE_NAME, VXLAN_NAME, type Desired } from './desired';
import { diffMap, fastPathWant } from './fastpath';

const desired: Desired = {
  routes: [
    { dst: '198.18.0.5/32', dev: BRIDGE_NAME },
    { dst: '198.18.0.9/32', dev: VXLAN_NAME, via: '198.19.0.12', onlink: true, src: '198.19.0.11' },
    { dst: '198.18.0.7/32', dev: BRIDGE_NAME },
  ],
  neighs: [],
  fdbs: [],
  locals: [{ ip: '198.18.0.5', veth: 'bth00000005' }, { ip: '198.18.0.7', veth: 'bth00000007' }],
};

test('fastPathWant lists local pods whose veth is in service and remote pods with a route', (t) => {
  const links = [
    { name: BRIDGE_NAME, index: 3, up: true },
    { name: VXLAN_NAME, index: 4, up: true },
    { name: 'bth00000005', index: 9, up: true, master: 3 },
  ];
  const w = fastPathWant(desired, links);
  t.is(w.vxlan, 4);
  t.deepEqual([...w.peers], [['198.18.0.5', { index: 9, veth: 'bth00000005' }]], 'no veth yet for .7: not listed');
  t.deepEqual([...w.remotes], [['198.18.0.9', '198.19.0.12']]);
  t.true(w.present.has('bth00000005'));
});

test('a retired veth (down, or off the bridge) is not a fast path target', (t) => {
  for (const retired of [{ up: false, master: 3 }, { up: true }, { up: true, master: 77 }]) {
    const links = [{ name: BRIDGE_NAME, index: 3, up: true }, { name: 'bth00000005', index: 9, ...retired }];
    const w = fastPathWant(desired, links);
    t.is(w.peers.size, 0, JSON.stringify(retired));
    t.true(w.present.has('bth00000005'), 'still present: its tombstone must stay');
  }
});

test('fastPathWant without berth.vxlan has no hook', (t) => {
  t.is(fastPathWant(desired, []).vxlan, undefined);
});

test('diffMap: applying the diff to have gives want', (t) => {
  const entries = fc.array(fc.tuple(fc.constantFrom<string>('a', 'b', 'c', 'd', 'e'), fc.integer({ min: 0, max: 3 })));
  fc.assert(fc.property(entries, entries, (w, h) => {
    const want = new Map(w);
    const have = new Map(h);
    const d = diffMap(want, have, (a, b) => a === b);
    const next = new Map(have);
    for (const k of d.del) next.delete(k);
    for (const [k, v] of d.set) next.set(k, v);
    t.deepEqual([...next].sort(), [...want].sort());
    t.is(diffMap(want, next, (a, b) => a === b).set.length + diffMap(want, next, (a, b) => a === b).del.length, 0);
  }));
});
