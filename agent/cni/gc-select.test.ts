import test from 'ava';
import fc from 'fast-check';
import type { Binding, LeaseView } from '../../common/records';
import { selectForGc } from './gc-select';

let n = 0;
const lease = (b: Partial<Binding> | null, state: 'bound' | 'held' = 'bound'): LeaseView => ({
  pool: 'p', ip: `198.18.0.${++n % 250}`, identity: `id-${n}`, state, pinned: false, createdAt: '', updatedAt: '', revision: String(n),
  ...(b ? { binding: { host: 'h1', containerId: 'c1', ifName: 'eth0', boundAt: '', ...b } } : {}),
});

test('GC of network rtcnet releases its own stale attachment, never berth\'s in the same pool', (t) => {
  const mine = lease({ containerId: 'a', network: 'rtcnet' });
  const theirs = lease({ containerId: 'b', network: 'berth' });
  const kept = lease({ containerId: 'c', network: 'rtcnet' });
  const legacy = lease({ containerId: 'd' });
  const sel = selectForGc([mine, theirs, kept, legacy], { host: 'h1', network: 'rtcnet', valid: [{ containerId: 'c', ifName: 'eth0' }] });
  t.deepEqual(sel.stale, [mine]);
  t.deepEqual(sel.unknownNetwork, [legacy]);
});

test('GC keeps by (containerId, ifName): another interface of a valid container is still stale', (t) => {
  const net1 = lease({ containerId: 'c', ifName: 'net1', network: 'n' });
  const sel = selectForGc([net1], { host: 'h1', network: 'n', valid: [{ containerId: 'c', ifName: 'eth0' }] });
  t.deepEqual(sel.stale, [net1]);
});

const arbBinding = fc.record({
  host: fc.constantFrom('h1', 'h2'), containerId: fc.constantFrom('a', 'b', 'c'), ifName: fc.constantFrom('eth0', 'net1'),
  network: fc.option(fc.constantFrom('berth', 'rtcnet'), { nil: undefined }),
});
const arbLease = fc.record({ b: fc.option(arbBinding, { nil: null }), held: fc.boolean() })
  .map(({ b, held }) => lease(b === null ? null : { ...b, ...(b.network === undefined ? { network: undefined } : {}) }, held ? 'held' : 'bound'));
const arbValid = fc.array(fc.record({ containerId: fc.constantFrom('a', 'b', 'c'), ifName: fc.constantFrom('eth0', 'net1') }), { maxLength: 6 });

test('property: selection is exactly this host\'s bound leases missing from the list, split by recorded network', (t) => {
  fc.assert(fc.property(fc.array(arbLease, { maxLength: 20 }), arbValid, fc.constantFrom('berth', 'rtcnet'), (leases, valid, network) => {
    for (const l of leases) if (l.binding && l.binding.network === undefined) delete l.binding.network;
    const { stale, unknownNetwork } = selectForGc(leases, { host: 'h1', network, valid });
    const isValid = (b: Binding) => valid.some((v) => v.containerId === b.containerId && v.ifName === b.ifName);
    const expectStale = leases.filter((l) => l.state === 'bound' && l.binding?.host === 'h1' && !isValid(l.binding) && l.binding.network === network);
    const expectUnknown = leases.filter((l) => l.state === 'bound' && l.binding?.host === 'h1' && !isValid(l.binding) && l.binding.network === undefined);
    return JSON.stringify(stale) === JSON.stringify(expectStale) && JSON.stringify(unknownNetwork) === JSON.stringify(expectUnknown)
      && stale.every((l) => l.binding!.network === network);
  }));
  t.pass();
});
