import test from 'ava';
import fc from 'fast-check';
import { canonicalTable, extractTables, firewallMatches, firewallScript, firewallWant, nftPrefix, parseCidrList, podDelta, withAdmitted, type FirewallInput } from './firewall';

const input: FirewallInput = {
  underlayIp: '198.19.0.11',
  pools: ['198.18.0.0/16', '198.18.64.0/24'],
  hosts: ['198.19.0.12', '198.19.0.13'],
  noMasquerade: ['10.1.2.3/8', '172.16.0.5'],
  locals: [{ ip: '198.18.0.5', veth: 'bth00000001' }, { ip: '198.18.0.9', veth: 'bth00000002' }, { ip: '198.18.0.7', veth: 'bth00000003' }],
  isolation: true,
};

/** `nft list ruleset` (nftables 1.0.6) after `nft -f` of firewallScript(firewallWant(input)), with a foreign table added. */
const LISTING = `table ip nat {
\tchain POSTROUTING {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t}
}
table inet berth {
\tset vteps {
\t\ttype ipv4_addr
\t\telements = { 198.19.0.11, 198.19.0.12,
\t\t\t     198.19.0.13 }
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tudp dport 4789 ip saddr != @vteps counter packets 3 bytes 150 drop
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 198.18.0.0/16 goto egress
\t\tip saddr 198.18.64.0/24 goto egress
\t}

\tchain egress {
\t\tip daddr 198.18.0.0/16 return
\t\tip daddr 198.18.64.0/24 return
\t\tip daddr 198.19.0.11 return
\t\tip daddr 198.19.0.12 return
\t\tip daddr 198.19.0.13 return
\t\tip daddr 10.0.0.0/8 return
\t\tip daddr 172.16.0.5 return
\t\tsnat ip to 198.19.0.11
\t}
}
table bridge berth {
\tset pods {
\t\ttype ifname . ipv4_addr
\t\telements = { "bth00000001" . 198.18.0.5,
\t\t\t     "bth00000003" . 198.18.0.7,
\t\t\t     "bth00000002" . 198.18.0.9 }
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority filter; policy accept;
\t\tiifname != "bth*" accept
\t\tiifname . ip saddr @pods accept
\t\tiifname . arp saddr ip @pods accept
\t\tcounter packets 0 bytes 0 drop
\t}
}`;

test('the wanted tables are what nft lists back after applying them (set order and wrapping aside)', (t) => {
  const w = firewallWant(input);
  t.true(firewallMatches(w, LISTING));
  const tables = extractTables(LISTING);
  t.deepEqual([...tables.keys()], ['inet', 'bridge'], 'only tables named berth, never a foreign one');
  t.is(canonicalTable(tables.get('bridge')!), canonicalTable(w.bridge!));
});

test('masquerade: pool sources, except to pools, registered hosts and --no-masquerade, SNAT to the underlay address', (t) => {
  const inet = firewallWant(input).inet;
  t.regex(inet, /ip saddr 198\.18\.0\.0\/16 goto egress\nip saddr 198\.18\.64\.0\/24 goto egress/);
  for (const keep of ['198.18.0.0/16', '198.18.64.0/24', '198.19.0.11', '198.19.0.12', '198.19.0.13', '10.0.0.0/8', '172.16.0.5']) {
    t.true(inet.includes(`ip daddr ${keep} return`), keep);
  }
  t.true(inet.trimEnd().endsWith('snat ip to 198.19.0.11\n}\n}'));
});

test('isolation off: no VXLAN filter, and the bridge table is deleted, not kept', (t) => {
  const w = firewallWant({ ...input, isolation: false });
  t.is(w.bridge, undefined);
  t.false(w.inet.includes('4789'));
  t.false(firewallMatches(w, LISTING), 'a live bridge table that should not exist is a difference');
  const script = firewallScript(w);
  t.regex(script, /^table bridge berth\ndelete table bridge berth\n$/m);
  t.false(/table bridge berth \{/.test(script));
});

test('the script replaces both tables in one file: create, delete, add back', (t) => {
  const lines = firewallScript(firewallWant(input)).split('\n');
  t.deepEqual(lines.filter((l) => /^(delete )?table /.test(l)), [
    'table inet berth', 'delete table inet berth', 'table inet berth {',
    'table bridge berth', 'delete table bridge berth', 'table bridge berth {',
  ]);
});

test('a missing element, a missing table or an edited rule is a difference', (t) => {
  const w = firewallWant(input);
  t.false(firewallMatches(w, LISTING.replace('"bth00000003" . 198.18.0.7,', '')));
  t.false(firewallMatches(w, LISTING.replace('198.19.0.13 }', '198.19.0.99 }')));
  t.false(firewallMatches(w, LISTING.replace('\t\tcounter packets 0 bytes 0 drop\n', '')));
  t.false(firewallMatches(w, LISTING.replace('snat ip to 198.19.0.11', 'snat ip to 198.19.0.12')));
  t.false(firewallMatches(w, extractTables(LISTING).get('inet')!));
  t.false(firewallMatches(w, ''));
});

/** What nft's listing looks like: inner lines indented, only the table's own brace in column 0. */
const indent = (table: string) => table.split('\n').map((l, i, all) => (i === 0 || i === all.length - 1 ? l : `\t${l}`)).join('\n');

const ip = fc.tuple(fc.constant(198), fc.constant(18), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).map((p) => p.join('.'));

test('property: element order and wrapping never matter, element content always does', (t) => {
  fc.assert(fc.property(fc.uniqueArray(ip, { minLength: 1, maxLength: 30 }), fc.integer(), (ips, seed) => {
    const locals = ips.map((x, i) => ({ ip: x, veth: `bth${i.toString(16).padStart(8, '0')}` }));
    const w = firewallWant({ ...input, locals });
    const elems = locals.map((l) => `"${l.veth}" . ${l.ip}`);
    const shuffled = [...elems].sort((a, b) => ((a.length * 31 + seed) % 7) - ((b.length * 17 + seed) % 5));
    const wrapped = `elements = { ${shuffled.join(',\n\t\t\t     ')} }`;
    const listed = w.bridge!.replace(/elements = \{[^}]*\}/, wrapped);
    if (!firewallMatches(w, `${indent(w.inet)}\n${indent(listed)}\n`)) return false;
    const fewer = w.bridge!.replace(/elements = \{[^}]*\}/, `elements = { ${shuffled.slice(1).join(', ')} }`);
    return shuffled.length === 1 ? true : !firewallMatches(w, `${indent(w.inet)}\n${indent(fewer)}\n`);
  }));
  t.pass();
});

test('CIDRs are written as nft prints them, and bad --no-masquerade entries are named', (t) => {
  t.is(nftPrefix('10.1.2.3/8'), '10.0.0.0/8');
  t.is(nftPrefix('198.19.0.4/32'), '198.19.0.4');
  t.is(nftPrefix('0.0.0.0/0'), '0.0.0.0/0');
  t.is(nftPrefix('fd00::/8'), undefined);
  t.is(nftPrefix('10.0.0.0/33'), undefined);
  t.deepEqual(parseCidrList(' 10.0.0.0/8, 192.168.1.7 ,'), ['10.0.0.0/8', '192.168.1.7']);
  t.throws(() => parseCidrList('10.0.0.0/8,nope'), { message: /nope/ });
  t.throws(() => parseCidrList('300.1.1.1'), { message: /300\.1\.1\.1/ });
});

test('IPv6 pools and addresses get no rule; duplicates collapse', (t) => {
  const w = firewallWant({ ...input, pools: ['198.18.0.0/16', 'fd00::/64', '198.18.0.0/16'], locals: [{ ip: 'fd00::5', veth: 'bth00000009' }] });
  t.is(w.inet.split('\n').filter((l) => l.startsWith('ip saddr')).length, 1);
  t.false(w.bridge!.includes('fd00'));
  t.false(w.bridge!.includes('elements'), 'an empty set is listed without elements');
});

test('admitted pods join the source check until the watch shows them, then leave the map', (t) => {
  const admitted = new Map([['bth00000001', '198.18.0.5'], ['bth00000002', '198.18.0.6']]);
  const watched = [{ veth: 'bth00000001', ip: '198.18.0.5' }, { veth: 'bth00000009', ip: '198.18.0.9' }];
  t.deepEqual(withAdmitted(watched, admitted), [...watched, { veth: 'bth00000002', ip: '198.18.0.6' }]);
  t.deepEqual([...admitted.keys()], ['bth00000002'], 'the one the watch caught up with is dropped');
  t.deepEqual(withAdmitted([{ veth: 'bth00000002', ip: '198.18.0.7' }], admitted), [{ veth: 'bth00000002', ip: '198.18.0.7' }],
    'where the watch says otherwise for that veth, the watch wins');
});

test('podDelta: the pods to remove and add, or undefined when the tables differ in anything else', (t) => {
  const a = firewallWant({ ...input, locals: [{ ip: '198.18.0.5', veth: 'bth00000001' }, { ip: '198.18.0.6', veth: 'bth00000002' }] });
  const b = firewallWant({ ...input, locals: [{ ip: '198.18.0.6', veth: 'bth00000002' }, { ip: '198.18.0.7', veth: 'bth00000001' }] });
  t.deepEqual(podDelta(a, b), { remove: [{ veth: 'bth00000001', ip: '198.18.0.5' }], add: [{ veth: 'bth00000001', ip: '198.18.0.7' }] });
  t.deepEqual(podDelta(a, a), { remove: [], add: [] });
  t.is(podDelta(a, firewallWant({ ...input, isolation: false })), undefined, 'isolation off deletes the bridge table');
  t.is(podDelta(a, firewallWant({ ...input, noMasquerade: ['10.0.0.0/8'] })), undefined, 'the inet table changed');
  fc.assert(fc.property(fc.array(fc.record({ veth: fc.constantFrom('bth00000001', 'bth00000002', 'bth00000003'), ip: fc.constantFrom('198.18.0.1', '198.18.0.2', 'fd00::1') }), { maxLength: 6 }),
    fc.array(fc.record({ veth: fc.constantFrom('bth00000001', 'bth00000002', 'bth00000003'), ip: fc.constantFrom('198.18.0.1', '198.18.0.2', 'fd00::1') }), { maxLength: 6 }), (l1, l2) => {
      const w1 = firewallWant({ ...input, locals: l1 });
      const w2 = firewallWant({ ...input, locals: l2 });
      const d = podDelta(w1, w2)!;
      const k = (p: { veth: string; ip: string }) => `${p.veth}|${p.ip}`;
      const after = new Set(w1.pods!.map(k));
      d.remove.forEach((p) => after.delete(k(p)));
      d.add.forEach((p) => after.add(k(p)));
      // Applying the delta to the old elements gives the new ones, and so the new table text.
      return JSON.stringify([...after].sort()) === JSON.stringify(w2.pods!.map(k).sort()) && (w1.bridge === w2.bridge) === (d.remove.length + d.add.length === 0);
    }));
});
