import test from 'ava';
import fc from 'fast-check';
import type { BindRequest } from '../common/api';
import type { Host, Lease } from '../common/records';
import { orphanLease, planReaper, type HostObservation } from './host-death';
import { isExpired, newLease } from './lease-rules';

const T0 = Date.parse('2026-11-23T10:00:00.000Z');
const DEAD_AFTER = 300_000;
const rec = (name: string, o: Partial<Host> = {}): Host => ({ name, underlayIp: '198.19.0.11', vtepMac: '0e:be:00:00:00:02', vni: 4242, pool: 'p', registeredAt: '', ...o });
const obs = (name: string, alive: boolean, o: Partial<Host> = {}): HostObservation => ({ record: rec(name, o), alive });

test('an absent host is first marked, then declared dead once absent for deadAfter', (t) => {
  let p = planReaper([obs('h1', false)], new Map(), T0, DEAD_AFTER);
  t.deepEqual(p.actions, [{ kind: 'mark-absent', host: 'h1', since: new Date(T0).toISOString(), deadAt: new Date(T0 + DEAD_AFTER).toISOString() }]);
  p = planReaper([obs('h1', false, { absent: { since: new Date(T0).toISOString(), deadAt: new Date(T0 + DEAD_AFTER).toISOString() } })], p.clock, T0 + DEAD_AFTER - 1, DEAD_AFTER);
  t.deepEqual(p.actions, []);
  p = planReaper([obs('h1', false)], p.clock, T0 + DEAD_AFTER, DEAD_AFTER);
  t.is(p.actions[0].kind, 'declare-dead');
});

test('a previous leader\'s annotation never shortens the new leader\'s wait', (t) => {
  const old = { since: new Date(T0 - 3_600_000).toISOString(), deadAt: new Date(T0 - 3_000_000).toISOString() };
  const p = planReaper([obs('h1', false, { absent: old })], new Map(), T0, DEAD_AFTER);
  t.deepEqual(p.actions, [{ kind: 'mark-absent', host: 'h1', since: old.since, deadAt: new Date(T0 + DEAD_AFTER).toISOString() }]);
});

test('a dead-marked record is finished unless its agent is back', (t) => {
  const dead = { at: new Date(T0).toISOString(), by: 'operator' as const, reason: 'r' };
  t.deepEqual(planReaper([obs('h1', false, { dead })], new Map(), T0, DEAD_AFTER).actions, [{ kind: 'finish', host: 'h1' }]);
  t.deepEqual(planReaper([obs('h1', true, { dead })], new Map(), T0, DEAD_AFTER).actions, []);
});

test('property: a host is declared dead only after deadAfter of absence seen without a break', (t) => {
  // A run of checks at increasing times; each check sees the host alive or absent.
  const step = fc.record({ dt: fc.integer({ min: 0, max: 120_000 }), alive: fc.boolean() });
  fc.assert(fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => {
    let clock = new Map<string, number>();
    let now = T0;
    let absentFrom: number | null = null;
    for (const s of steps) {
      now += s.dt;
      if (s.alive) absentFrom = null;
      else if (absentFrom === null) absentFrom = now;
      const p = planReaper([obs('h1', s.alive)], clock, now, DEAD_AFTER);
      clock = p.clock;
      const declared = p.actions.some((a) => a.kind === 'declare-dead');
      const due = absentFrom !== null && now - absentFrom >= DEAD_AFTER;
      if (declared !== due) return false;
      if (s.alive && (p.actions.length > 0 || clock.size > 0)) return false;
    }
    return true;
  }));
  t.pass();
});

const bindReq = (o: Partial<BindRequest> = {}): BindRequest => ({ identity: 'k8s/ns/db-0', host: 'h1', containerId: 'c1', ifName: 'eth0', ...o });
const boundLease = (o: Partial<BindRequest> = {}): Lease => newLease('p', '198.18.0.7', bindReq(o), new Date(T0).toISOString()).next as Lease;

test('a dead host\'s bound lease becomes held for the pool hold, with an orphaned event saying why', (t) => {
  const d = orphanLease({ ...boundLease(), revision: '42' }, 'h1', 60, T0, 'reaper', 'host h1 declared dead')!;
  t.is(d.next?.state, 'held');
  t.is(d.next?.heldUntil, new Date(T0 + 60_000).toISOString());
  t.is(d.next?.lastBinding?.host, 'h1');
  t.false('revision' in (d.next as object), 'the fencing token is never stored');
  t.like(d.event, { kind: 'orphaned', actor: 'reaper', reason: 'host h1 declared dead', oldState: 'bound', newState: 'held', host: 'h1' });
});

test('property: orphaning keeps pins, never touches other hosts\' or unbound leases', (t) => {
  fc.assert(fc.property(fc.boolean(), fc.constantFrom('h1', 'h2'), fc.boolean(), fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 86_400 })), (pinned, host, held, hold) => {
    let l: Lease = { ...boundLease({ host }), pinned };
    if (held) { l = { ...l, state: 'held', lastBinding: l.binding }; delete l.binding; }
    const d = orphanLease(l, 'h1', hold, T0, 'operator', 'forgotten');
    if (held || host !== 'h1') return d === null;
    // A hold of 0 frees an unpinned address, as the container's own release would.
    if (hold === 0 && !pinned) return d !== null && d.next === null && d.frees === true && d.event?.kind === 'orphaned' && d.event.newState === 'free';
    if (!d || d.next?.state !== 'held' || d.next.pinned !== pinned || d.next.binding !== undefined) return false;
    // pinned: held forever; unpinned: expires exactly when the hold lapses
    return pinned ? d.next.heldUntil === undefined && !isExpired(d.next, T0 + 1e12) : isExpired(d.next, T0 + hold * 1000) && !isExpired(d.next, T0 + hold * 1000 - 1);
  }));
  t.pass();
});
