import test from 'ava';
import fc from 'fast-check';
import type { LinkView } from './fastpath';
import { staleAttachments } from './withdraw';

const BR = { name: 'berth0', index: 2, up: true };
const veth = (name: string, index: number, o: Partial<LinkView> = {}): LinkView => ({ name, index, up: true, master: 2, ...o });

test('a known veth whose lease is no longer local is retired; wanted and unknown ones are not', (t) => {
  const links = [BR, veth('bth00000001', 10), veth('bth00000002', 11), veth('bth00000003', 12)];
  const r = staleAttachments({ locals: [{ ip: '198.18.0.2', veth: 'bth00000001' }] }, links, new Set(['bth00000001', 'bth00000002']));
  t.deepEqual(r.retire.map((l) => l.name), ['bth00000002']);
  t.deepEqual([...r.known].sort(), ['bth00000001'], 'a retired veth is forgotten; an unknown one (an ADD in flight) stays unknown');
});

test('a veth already out of service is left alone and forgotten', (t) => {
  const r = staleAttachments({ locals: [] }, [BR, veth('bth0000000a', 10, { up: false, master: undefined })], new Set(['bth0000000a']));
  t.deepEqual(r.retire, []);
  t.deepEqual([...r.known], []);
});

test('property: only known, in-service veths outside locals are retired, and never one that is wanted', (t) => {
  const name = fc.integer({ min: 0, max: 7 }).map((i) => `bth0000000${i}`);
  const link = fc.record({ n: name, up: fc.boolean(), onBridge: fc.boolean() });
  fc.assert(fc.property(fc.uniqueArray(link, { selector: (l) => l.n, maxLength: 8 }), fc.uniqueArray(name), fc.uniqueArray(name), (ls, wanted, known) => {
    const links = [BR, ...ls.map((l, i) => veth(l.n, 10 + i, { up: l.up, master: l.onBridge ? 2 : undefined }))];
    const r = staleAttachments({ locals: wanted.map((v, i) => ({ ip: `198.18.0.${i + 2}`, veth: v })) }, links, new Set(known));
    for (const l of r.retire) {
      if (wanted.includes(l.name) || !known.includes(l.name) || !(l.up || l.master === 2)) return false;
      if (r.known.has(l.name)) return false;
    }
    const expected = ls.filter((l) => known.includes(l.n) && !wanted.includes(l.n) && (l.up || l.onBridge)).length;
    return r.retire.length === expected && wanted.every((w) => r.known.has(w));
  }));
  t.pass();
});
