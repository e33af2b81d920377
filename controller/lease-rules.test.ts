import test from 'ava';
import fc from 'fast-check';
import type { BindRequest } from '../common/api';
import { isBerthError } from '../common/errors';
import type { Lease } from '../common/records';
import { decideBind, decideOperatorFree, decidePin, decideRelease, isExpired, newLease, type HostStatus } from './lease-rules';

const NOW = '2026-11-23T10:00:00.000Z';
const req = (o: Partial<BindRequest> = {}): BindRequest => ({ identity: 'k8s/web/db-0', host: 'node-a', containerId: 'c1', ifName: 'eth0', ...o });
const bound = (o: Partial<BindRequest> = {}): Lease => newLease('default', '198.18.0.7', req(o), NOW).next as Lease;
const alive = (): HostStatus => 'alive';
const absent = (): HostStatus => 'absent';
const gone = (): HostStatus => 'gone';

test('same container binding again changes nothing', (t) => {
  const d = decideBind(bound(), req(), NOW, alive);
  t.is(d.next, null);
  t.is(d.event, null);
});

test('a different container cannot take a bound lease while its host is alive', (t) => {
  const e = t.throws(() => decideBind(bound(), req({ containerId: 'c2', host: 'node-b' }), NOW, alive));
  t.true(isBerthError(e));
  if (isBerthError(e)) {
    t.is(e.kind, 'LeaseHeldElsewhere');
    t.true(e.retryable);
    t.is(e.cniCode, 11);
    t.regex(e.details ?? '', /container c1 on host node-a/);
  }
});

test('a bound lease moves when its host record is gone (declared dead or forgotten), and says so', (t) => {
  const d = decideBind(bound(), req({ containerId: 'c2', host: 'node-b' }), NOW, gone);
  t.is(d.next?.binding?.host, 'node-b');
  t.is(d.reliesOnHostGone, 'node-a');
  t.is(d.event?.kind, 'moved');
});

test('an absent agent (record kept, alive key gone) keeps its bound lease, and the refusal says how to free it', (t) => {
  const e = t.throws(() => decideBind(bound(), req({ containerId: 'c2', host: 'node-b' }), NOW, absent));
  t.true(isBerthError(e));
  if (isBerthError(e)) {
    t.is(e.kind, 'LeaseHeldElsewhere');
    t.regex(e.details ?? '', /container c1 on host node-a/);
    t.regex(e.details ?? '', /not responding.*berthctl hosts forget node-a/);
  }
});

test('property: a bound lease changes host only when its host is gone, whatever the liveness', (t) => {
  const status = fc.constantFrom<HostStatus>('alive', 'absent', 'gone');
  fc.assert(fc.property(status, fc.constantFrom('c1', 'c2'), fc.constantFrom('node-a', 'node-b'), (s, c, h) => {
    const cur = bound();
    let moved: boolean;
    try {
      const d = decideBind(cur, req({ containerId: c, host: h }), NOW, () => s);
      moved = d.next !== null && (d.next.binding?.containerId !== 'c1' || d.next.binding?.host !== 'node-a');
      if (moved && d.reliesOnHostGone !== 'node-a') return false; // the store fences on the old record's absence
    } catch (e) {
      if (!isBerthError(e) || e.kind !== 'LeaseHeldElsewhere') throw e;
      moved = false;
    }
    const sameHolder = c === 'c1' && h === 'node-a';
    return moved === (!sameHolder && s === 'gone');
  }));
  t.pass();
});

test('release by the bound container holds the lease for holdSeconds', (t) => {
  const d = decideRelease(bound(), 'c1', 60, Date.parse(NOW));
  t.is(d.outcome, 'released');
  t.is(d.next?.state, 'held');
  t.is(d.next?.heldUntil, '2026-11-23T10:01:00.000Z');
  t.is(d.next?.binding, undefined);
  t.is(d.next?.lastBinding?.containerId, 'c1');
});

test('a stale release from an older container changes nothing', (t) => {
  const d = decideRelease(bound({ containerId: 'c2' }), 'c1', 60, Date.parse(NOW));
  t.is(d.outcome, 'stale');
  t.is(d.next, null);
});

test('a held lease rebinds from another host as a move', (t) => {
  const held = decideRelease(bound(), 'c1', 60, Date.parse(NOW)).next as Lease;
  const d = decideBind(held, req({ host: 'node-b', containerId: 'c9' }), NOW, alive);
  t.is(d.next?.state, 'bound');
  t.is(d.next?.heldUntil, undefined);
  t.is(d.event?.kind, 'moved');
});

test('pinned leases never expire and pins refuse another identity', (t) => {
  const pinned = decidePin(null, 'default', 'k8s/web/db-1', '198.18.0.9', NOW).next as Lease;
  t.true(pinned.pinned);
  const released = decideRelease({ ...pinned, state: 'bound', binding: { host: 'a', containerId: 'c', ifName: 'eth0', boundAt: NOW } }, 'c', 0, Date.parse(NOW)).next as Lease;
  t.is(released.heldUntil, undefined);
  t.false(isExpired(released, Date.parse(NOW) + 1e12));
  t.throws(() => decidePin(pinned, 'default', 'someone-else', '198.18.0.9', NOW));
});

test('operator free of a bound lease needs force', (t) => {
  t.throws(() => decideOperatorFree(bound(), false, NOW));
  t.is(decideOperatorFree(bound(), true, NOW).newState, 'free');
});

test('property: only held, unpinned leases past their hold are expired', (t) => {
  fc.assert(fc.property(fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: -10_000, max: 10_000 }), (isHeld, pinned, hold, skew) => {
    let l = bound();
    if (isHeld) l = decideRelease(l, 'c1', hold, Date.parse(NOW)).next as Lease;
    l = { ...l, pinned, ...(pinned ? { heldUntil: undefined } : {}) };
    const nowMs = Date.parse(NOW) + hold * 1000 + skew;
    return isExpired(l, nowMs) === (isHeld && !pinned && skew >= 0);
  }));
  t.pass();
});

test('property: any sequence of binds and releases keeps one identity on one address', (t) => {
  const op = fc.record({ kind: fc.constantFrom('bind', 'release'), c: fc.constantFrom('c1', 'c2', 'c3'), h: fc.constantFrom('node-a', 'node-b'), hostAlive: fc.constantFrom<HostStatus>('alive', 'absent', 'gone') });
  fc.assert(fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
    let l = bound();
    for (const o of ops) {
      try {
        const d = o.kind === 'bind'
          ? decideBind(l, req({ containerId: o.c, host: o.h }), NOW, () => o.hostAlive)
          : decideRelease(l, o.c, 30, Date.parse(NOW));
        if (d.next) l = d.next;
      } catch (e) {
        if (!isBerthError(e) || e.kind !== 'LeaseHeldElsewhere') throw e;
      }
      if (l.ip !== '198.18.0.7' || l.identity !== 'k8s/web/db-0') return false;
      if ((l.state === 'bound') !== (l.binding !== undefined)) return false;
    }
    return true;
  }));
  t.pass();
});
