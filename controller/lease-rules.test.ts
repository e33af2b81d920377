import test from 'ava';
import fc from 'fast-check';
import type { BindRequest } from '../common/api';
import { isBerthError } from '../common/errors';
import type { Lease } from '../common/records';
import { overlaps, parseCidr } from '../common/cidr';
import type { IdentitySource, Pool } from '../common/records';
import { checkPoolFits, poolFromRequest } from './pool-rules';
import { bindingOnOtherInterface, decideBind, decideOperatorFree, decidePin, decidePoolDelete, decideRelease, holdSecondsFor, isExpired, newLease, sourceOf, type HostStatus } from './lease-rules';

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
  fc.assert(fc.property(fc.boolean(), fc.boolean(), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: -10_000, max: 10_000 }), (isHeld, pinned, hold, skew) => {
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

test('a bind records the CNI network in the binding', (t) => {
  t.is(bound({ network: 'berth' }).binding?.network, 'berth');
  t.false('network' in (bound().binding ?? {}), 'no network field when the request names none');
});

test('a second interface of the same container cannot take the lease: InterfaceConflict, naming both', (t) => {
  for (const network of ['berth', 'rtcnet', undefined]) {
    const e = t.throws(() => decideBind(bound({ network: 'berth' }), req({ ifName: 'net1', network }), NOW, alive));
    t.true(isBerthError(e));
    if (isBerthError(e)) {
      t.is(e.kind, 'InterfaceConflict');
      t.false(e.retryable);
      t.is(e.cniCode, 125);
      t.regex(e.details ?? '', /through interface eth0 \(network berth\) of container c1; interface net1/);
    }
  }
});

test('the same attachment again records its network when the binding has none, and otherwise changes nothing', (t) => {
  const legacy = bound();
  const d = decideBind(legacy, req({ network: 'berth' }), NOW, alive);
  t.is(d.next?.binding?.network, 'berth');
  t.is(d.next?.binding?.ifName, 'eth0');
  t.is(d.next?.binding?.boundAt, legacy.binding?.boundAt, 'still the same binding');
  t.is(d.event?.kind, 'rebound');
  t.is(decideBind(bound({ network: 'berth' }), req({ network: 'berth' }), NOW, alive).next, null);
  t.is(decideBind(bound({ network: 'berth' }), req(), NOW, alive).next, null, 'a request without a network keeps the recorded one');
});

test('a release fenced by another interface of the same container is recognised', (t) => {
  t.true(bindingOnOtherInterface(bound(), { containerId: 'c1', ifName: 'net1' }));
  t.false(bindingOnOtherInterface(bound(), { containerId: 'c1', ifName: 'eth0' }));
  t.false(bindingOnOtherInterface(bound(), { containerId: 'c1' }), 'no ifName: fenced by container only');
  t.false(bindingOnOtherInterface(bound(), { containerId: 'c2', ifName: 'net1' }), "another container's: decideRelease calls it stale");
  t.false(bindingOnOtherInterface(decideRelease(bound(), 'c1', 60, Date.parse(NOW)).next as Lease, { containerId: 'c1', ifName: 'net1' }));
});

test('property: while bound to one container, the lease never changes interface, and only its own interface releases it', (t) => {
  const op = fc.record({
    kind: fc.constantFrom('bind', 'release'), c: fc.constantFrom('c1', 'c2'), ifName: fc.constantFrom('eth0', 'net1', 'net2'),
    network: fc.constantFrom('berth', 'rtcnet', undefined), h: fc.constantFrom('node-a', 'node-b'), hostAlive: fc.constantFrom<HostStatus>('alive', 'absent', 'gone'),
  });
  fc.assert(fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
    let l = bound({ network: 'berth' });
    for (const o of ops) {
      const before = l;
      try {
        if (o.kind === 'bind') {
          const d = decideBind(l, req({ containerId: o.c, host: o.h, ifName: o.ifName, network: o.network }), NOW, () => o.hostAlive);
          if (d.next) l = d.next;
        } else if (!bindingOnOtherInterface(l, { containerId: o.c, ifName: o.ifName })) {
          const d = decideRelease(l, o.c, 30, Date.parse(NOW));
          if (d.next) l = d.next;
        }
      } catch (e) {
        if (!isBerthError(e) || !['LeaseHeldElsewhere', 'InterfaceConflict'].includes(e.kind)) throw e;
      }
      const b0 = before.binding;
      const b1 = l.binding;
      if (b0 && b1 && b0.containerId === b1.containerId && b0.host === b1.host && b0.ifName !== b1.ifName) return false;
      if (o.kind === 'release' && b0 && b0.containerId === o.c && b0.ifName !== o.ifName && l.state !== 'bound') return false;
      if (b0 && b1 && b0.containerId === b1.containerId && b0.host === b1.host && b0.network !== undefined && b1.network === undefined) return false;
    }
    return true;
  }));
  t.pass();
});

const SOURCES: IdentitySource[] = ['explicit', 'k8s', 'host', 'container'];
const policy = (holdSeconds: number, holdPolicy?: Pool['holdPolicy']) => ({ holdSeconds, ...(holdPolicy ? { holdPolicy } : {}) });

test('a new lease records its identity source; older leases are read by the identity form', (t) => {
  t.is(bound({ source: 'host', identity: 'host/node-a/web' }).source, 'host');
  t.is(sourceOf({ identity: 'container/abc' }), 'container');
  t.is(sourceOf({ identity: 'k8s/web/db-0' }), 'k8s');
  t.is(sourceOf({ identity: 'k8s/db-0' }), 'k8s');
  t.is(sourceOf({ identity: 'host/n/web' }), 'host');
  t.is(sourceOf({ identity: 'db/primary' }), 'explicit');
  t.is(sourceOf({ identity: 'container/abc', source: 'explicit' }), 'explicit', 'a recorded source wins');
});

test('release frees a container identity at once and holds the others', (t) => {
  const d = decideRelease(bound({ identity: 'container/c1', source: 'container' }), 'c1', holdSecondsFor(policy(3600), { identity: 'container/c1', source: 'container' }), Date.parse(NOW));
  t.true(d.frees);
  t.is(d.next, null);
  t.like(d.event, { kind: 'released', oldState: 'bound', newState: 'free' });
  const held = decideRelease(bound(), 'c1', holdSecondsFor(policy(3600), bound()), Date.parse(NOW));
  t.falsy(held.frees);
  t.is(held.next?.heldUntil, '2026-11-23T11:00:00.000Z');
});

test('property: the hold applies by identity source and pool policy', (t) => {
  fc.assert(fc.property(fc.constantFrom(...SOURCES), fc.constantFrom<Pool['holdPolicy']>(undefined, 'all', 'explicit-only'), fc.integer({ min: 0, max: 100_000 }), fc.boolean(), (source, holdPolicy, hold, pinned) => {
    const identity = source === 'container' ? 'container/c1' : source === 'k8s' ? 'k8s/web/p' : source === 'host' ? 'host/node-a/p' : 'my/app';
    let l = bound({ identity, source });
    if (pinned) l = { ...l, pinned: true };
    const secs = holdSecondsFor(policy(hold, holdPolicy), l);
    const expected = source === 'container' ? 0 : source === 'explicit' || holdPolicy !== 'explicit-only' ? hold : 0;
    if (secs !== expected) return false;
    const d = decideRelease(l, 'c1', secs, Date.parse(NOW));
    if (d.outcome !== 'released' || d.event?.kind !== 'released') return false;
    // Pinned leases are held forever whatever the source; others are freed iff their hold is 0.
    if (pinned) return d.frees !== true && d.next?.state === 'held' && d.next.heldUntil === undefined;
    if (expected === 0) return d.frees === true && d.next === null && d.event.newState === 'free';
    return d.frees !== true && d.next?.heldUntil === new Date(Date.parse(NOW) + expected * 1000).toISOString();
  }));
  t.pass();
});

test('property: a discard frees only a lease created by the binding it releases', (t) => {
  const op = fc.record({ kind: fc.constantFrom('bind', 'release', 'pin'), c: fc.constantFrom('c1', 'c2') });
  fc.assert(fc.property(fc.array(op, { maxLength: 8 }), fc.constantFrom('c1', 'c2'), (ops, releaser) => {
    let l = bound();
    for (const o of ops) {
      try {
        const d = o.kind === 'bind' ? decideBind(l, req({ containerId: o.c }), NOW, alive)
          : o.kind === 'pin' ? decidePin(l, l.pool, l.identity, l.ip, NOW)
          : decideRelease(l, o.c, 60, Date.parse(NOW));
        if (d.next) l = d.next;
      } catch (e) {
        if (!isBerthError(e) || e.kind !== 'LeaseHeldElsewhere') throw e;
      }
    }
    const d = decideRelease(l, releaser, 60, Date.parse(NOW), true);
    const mine = l.state === 'bound' && l.binding?.containerId === releaser;
    if (!mine) return d.next === null && d.frees !== true;
    const fresh = l.lastBinding === undefined && !l.pinned;
    return fresh ? d.frees === true : d.frees !== true && d.next?.state === 'held';
  }));
  t.pass();
});

test('property: a pool is deleted only when no lease is bound or pinned, unless forced', (t) => {
  const lease = fc.record({ state: fc.constantFrom('bound', 'held'), pinned: fc.boolean() });
  fc.assert(fc.property(fc.array(lease, { maxLength: 10 }), fc.boolean(), (shapes, force) => {
    const leases = shapes.map((s, i) => ({ ...bound({ identity: `id-${i}` }), ip: `198.18.0.${i + 2}`, pinned: s.pinned, state: s.state as 'bound' | 'held' }));
    const blocked = leases.some((l) => l.state === 'bound' || l.pinned);
    try {
      const d = decidePoolDelete(leases, force);
      return (!blocked || force) && d.blocking.length === leases.filter((l) => l.state === 'bound' || l.pinned).length;
    } catch (e) {
      return blocked && !force && isBerthError(e) && e.kind === 'PoolInUse' && e.exitCode === 4;
    }
  }));
  t.pass();
});

test('property: any sequence of pool creates and deletes keeps the pools disjoint', (t) => {
  const cidr = fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 18, max: 30 }))
    .map(([third, prefix]) => parseCidr(`198.18.${third * 4}.0/${prefix}`).cidr);
  const op = fc.oneof(fc.record({ kind: fc.constant('create' as const), cidr }), fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }));
  fc.assert(fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
    const pools: Pool[] = [];
    let n = 0;
    for (const o of ops) {
      if (o.kind === 'delete') {
        if (pools.length > 0) pools.splice(o.at % pools.length, 1);
        continue;
      }
      const p = poolFromRequest({ name: `p${n++}`, cidr: o.cidr }, NOW);
      const clash = pools.some((q) => overlaps(parseCidr(q.cidr), parseCidr(p.cidr)));
      try {
        checkPoolFits(p, pools, []);
        if (clash) return false;
        pools.push(p);
      } catch (e) {
        if (!clash || !isBerthError(e) || e.kind !== 'PoolOverlap') return false;
      }
    }
    return pools.every((a, i) => pools.every((b, j) => i === j || !overlaps(parseCidr(a.cidr), parseCidr(b.cidr))));
  }));
  t.pass();
});
