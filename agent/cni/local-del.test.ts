import test from 'ava';
import fc from 'fast-check';
import type { LeaseView } from '../../common/records';
import { localDelRefusal, ReleasedAttachments, type LocalEvidence } from './local-del';

const ATT = { pool: 'p', containerId: 'c1', ifName: 'eth0', network: 'berth' };
const lease = (o: { host?: string; containerId?: string; ifName?: string; state?: 'bound' | 'held' }): LeaseView => ({
  pool: 'p', ip: '198.18.0.9', identity: 'k8s/a/b', state: o.state ?? 'bound', pinned: false, createdAt: '', updatedAt: '', revision: '5',
  ...(o.state === 'held' ? {} : { binding: { host: o.host ?? 'h1', containerId: o.containerId ?? 'c1', ifName: o.ifName ?? 'eth0', boundAt: '' } }),
});
const ok: LocalEvidence = { releasedAt: 10n, watch: { leases: [], revision: 12n }, vethPresent: false };

test('a repeated DEL is answered locally only with every piece of evidence', (t) => {
  t.is(localDelRefusal(ATT, 'h1', ok), undefined);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, releasedAt: undefined })!, /no release/);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, watch: undefined })!, /not listed/);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, watch: { leases: [], revision: 0n } })!, /not listed/);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, watch: { leases: [], revision: 9n } })!, /not reached the release/);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, watch: { leases: [lease({})], revision: 12n } })!, /bound to this attachment/);
  t.regex(localDelRefusal(ATT, 'h1', { ...ok, vethPresent: true })!, /veth/);
  // Bindings of other hosts, containers or interfaces, and held leases, are not this attachment's.
  const others = [lease({ host: 'h2' }), lease({ containerId: 'c2' }), lease({ ifName: 'net1' }), lease({ state: 'held' })];
  t.is(localDelRefusal(ATT, 'h1', { ...ok, watch: { leases: others, revision: 12n } }), undefined);
});

test('property: a local answer implies a known release, a watch past it with no binding of the attachment here, and no veth', (t) => {
  const arb = fc.record({
    releasedAt: fc.option(fc.bigInt(0n, 20n), { nil: undefined }),
    watch: fc.option(fc.record({
      revision: fc.bigInt(0n, 20n),
      leases: fc.array(fc.record({ host: fc.constantFrom('h1', 'h2'), containerId: fc.constantFrom('c1', 'c2'), ifName: fc.constantFrom('eth0', 'net1'), state: fc.constantFrom('bound' as const, 'held' as const) }).map(lease), { maxLength: 4 }),
    }), { nil: undefined }),
    vethPresent: fc.boolean(),
  });
  fc.assert(fc.property(arb, (e) => {
    if (localDelRefusal(ATT, 'h1', e) !== undefined) return true;
    return e.releasedAt !== undefined && e.watch !== undefined && e.watch.revision > 0n && e.watch.revision >= e.releasedAt && !e.vethPresent &&
      !e.watch.leases.some((l) => l.state === 'bound' && l.binding?.host === 'h1' && l.binding.containerId === 'c1' && l.binding.ifName === 'eth0');
  }));
  t.pass();
});

test('an ADD forgets the release; the network is part of the key; the oldest goes past the cap', (t) => {
  const r = new ReleasedAttachments(2);
  r.remember(ATT, 7n);
  t.is(r.releasedAt(ATT), 7n);
  t.is(r.releasedAt({ ...ATT, network: 'other' }), undefined);
  r.forget(ATT);
  t.is(r.releasedAt(ATT), undefined);
  r.remember({ ...ATT, containerId: 'a' }, 1n);
  r.remember({ ...ATT, containerId: 'b' }, 2n);
  r.remember({ ...ATT, containerId: 'a' }, 3n); // refreshed: now the newest
  r.remember({ ...ATT, containerId: 'c' }, 4n);
  t.is(r.size, 2);
  t.is(r.releasedAt({ ...ATT, containerId: 'b' }), undefined);
  t.is(r.releasedAt({ ...ATT, containerId: 'a' }), 3n);
});
