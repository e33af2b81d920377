import { deepStrictEqual } from 'node:assert';
import test from 'ava';
import fc from 'fast-check';
import { planChanges, simulate, type FdbSpec, type KernelState, type NeighSpec, type Op, type RouteSpec } from './plan';

// Small value sets so generated states collide on keys often.
const ip = fc.constantFrom('198.18.0.2', '198.18.0.3', '198.18.1.4', '198.18.9.9');
const under = fc.constantFrom('198.19.0.11', '198.19.0.12', '198.19.0.13');
const macA = fc.constantFrom('0e:be:00:00:00:01', '0e:be:00:00:00:02', '0e:be:00:00:00:03');
const dev = fc.constantFrom('berth0', 'berth.vxlan');

const route: fc.Arbitrary<RouteSpec> = fc.oneof(
  fc.record({ dst: ip.map((i) => `${i}/32`), dev: fc.constant('berth0') }),
  fc.record({ dst: ip.map((i) => `${i}/32`), dev: fc.constant('berth.vxlan'), via: under, onlink: fc.constant(true), src: under }),
);
const neigh: fc.Arbitrary<NeighSpec> = fc.record({ dev, ip: under, mac: macA });
const fdb: fc.Arbitrary<FdbSpec> = fc.record({ dev, mac: macA, dst: under });

/** What the planner may be asked to reach: one object per kernel key. */
const desiredArb: fc.Arbitrary<KernelState> = fc.record({
  routes: fc.uniqueArray(route, { selector: (r) => r.dst }),
  neighs: fc.uniqueArray(neigh, { selector: (n) => `${n.dev} ${n.ip}` }),
  fdbs: fc.uniqueArray(fdb, { selector: (f) => `${f.dev} ${f.mac}` }),
});
/** What the kernel may hold: routes can even be duplicated under one dst (ip route append). */
const actualArb: fc.Arbitrary<KernelState> = fc.record({
  routes: fc.uniqueArray(route, { maxLength: 8, selector: (r) => JSON.stringify(r) }),
  neighs: fc.uniqueArray(neigh, { selector: (n) => `${n.dev} ${n.ip}` }),
  fdbs: fc.uniqueArray(fdb, { selector: (f) => `${f.dev} ${f.mac}` }),
});

const canon = (s: KernelState) => ({
  routes: s.routes.map((r) => JSON.stringify(r, Object.keys(r).sort())).sort(),
  neighs: s.neighs.map((n) => JSON.stringify(n, Object.keys(n).sort())).sort(),
  fdbs: s.fdbs.map((f) => JSON.stringify(f, Object.keys(f).sort())).sort(),
});

test('planChanges(x, x) is empty', (t) => {
  fc.assert(fc.property(desiredArb, (x) => planChanges(x, x).length === 0));
  t.pass();
});

test('applying the plan to actual yields desired', (t) => {
  fc.assert(
    fc.property(desiredArb, actualArb, (desired, actual) => {
      deepStrictEqual(canon(simulate(actual, planChanges(desired, actual))), canon(desired));
    }),
  );
  t.pass();
});

test('planning again after applying is empty (idempotent)', (t) => {
  fc.assert(
    fc.property(desiredArb, actualArb, (desired, actual) => {
      const after = simulate(actual, planChanges(desired, actual));
      deepStrictEqual(planChanges(desired, after), []);
    }),
  );
  t.pass();
});

test('deletes only name objects that exist, and come before every replace', (t) => {
  fc.assert(
    fc.property(desiredArb, actualArb, (desired, actual) => {
      const ops = planChanges(desired, actual);
      const have = new Set(canon(actual).routes.concat(canon(actual).neighs, canon(actual).fdbs));
      const body = (o: Op) => ('route' in o ? o.route : 'neigh' in o ? o.neigh : o.fdb) as object;
      const deletesExist = ops.filter((o) => o.op === 'delete').every((o) => have.has(JSON.stringify(body(o), Object.keys(body(o)).sort())));
      const firstReplace = ops.findIndex((o) => o.op === 'replace');
      return deletesExist && (firstReplace < 0 || ops.slice(firstReplace).every((o) => o.op === 'replace'));
    }),
  );
  t.pass();
});

test('FDB and neighbour entries are written before the routes that use them', (t) => {
  const desired: KernelState = {
    routes: [{ dst: '198.18.0.9/32', dev: 'berth.vxlan', via: '198.19.0.12', onlink: true, src: '198.19.0.11' }],
    neighs: [{ dev: 'berth.vxlan', ip: '198.19.0.12', mac: '0e:be:00:00:00:02' }],
    fdbs: [{ dev: 'berth.vxlan', mac: '0e:be:00:00:00:02', dst: '198.19.0.12' }],
  };
  t.deepEqual(
    planChanges(desired, { routes: [], neighs: [], fdbs: [] }).map((o) => o.kind),
    ['fdb', 'neigh', 'route'],
  );
});

test('a moved container turns into one route replace, nothing else', (t) => {
  const before: KernelState = { routes: [{ dst: '198.18.0.9/32', dev: 'berth0' }], neighs: [], fdbs: [] };
  const after: KernelState = {
    routes: [{ dst: '198.18.0.9/32', dev: 'berth.vxlan', via: '198.19.0.12', onlink: true, src: '198.19.0.11' }],
    neighs: [],
    fdbs: [],
  };
  t.deepEqual(planChanges(after, before), [{ op: 'replace', kind: 'route', route: after.routes[0] }]);
});
