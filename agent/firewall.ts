/**
 * Pure: the nftables rules one host should hold, as the text `nft` prints,
 * computed from the same desired state as the routes (pools, registered
 * hosts, local leases). Two tables, both named `berth`, both owned entirely
 * by Berth and replaced together in one `nft -f` transaction
 * (agent/kernel/firewall.ts), the way kube-proxy's nftables mode replaces
 * its table:
 *
 *   table inet berth     egress masquerade (always), VXLAN input filter (isolation)
 *   table bridge berth   pod source check on berth0's ports, IPv4 and ARP (isolation)
 *
 * Why each rule is what it is: docs/dataplane.md "Egress" and "Isolation".
 *
 * Masquerade: a packet from any pool address to a destination outside every
 * pool, every registered host's underlay address and the --no-masquerade
 * list is SNATed to the host's underlay address. The decision is a chain of
 * `return`s evaluated once per connection (nat chains see only a
 * connection's first packet), so a plain list costs nothing per packet.
 *
 * The per-packet checks use sets (one hash lookup): `vteps` for the
 * underlay VXLAN port, `pods` (host veth . leased address) for what a pod
 * may send as.
 *
 * Comparing with the kernel: the live tables are listed with `nft list
 * ruleset` and both sides go through canonicalTable(), which only sorts set
 * elements (the kernel lists a hash set in its own order) and drops blank
 * lines and indentation, and reads a counter's values as just `counter`
 * (the drop rules count what they drop, for operators and tests). So the text below must be written exactly as nft
 * 1.0 prints it (e.g. `iifname . ip saddr @pods`, without the implied
 * `ether type ip`); the unit tests pin that against a real listing.
 */
import { VXLAN_PORT } from '../common/records';
import type { LocalEndpoint } from './desired';

export const FIREWALL_TABLE = 'berth';
/** The bridge table's set of (pod veth . address) pairs a pod may send as. */
export const PODS_SET = 'pods';
/** Every host veth Berth makes is called bth + 8 hex digits (vethNameFor). */
export const POD_VETH_GLOB = 'bth*';

export interface FirewallInput {
  /** This host's underlay address: the SNAT source. */
  underlayIp: string;
  /** CIDRs of every Berth pool. */
  pools: string[];
  /** Underlay addresses of every registered host, this one included. */
  hosts: string[];
  /** Destinations that keep the pod's source (agent --no-masquerade). */
  noMasquerade: string[];
  /** Local bound leases and their host veths. */
  locals: LocalEndpoint[];
  /** Source check and VXLAN input filter (agent --no-isolation turns them off). */
  isolation: boolean;
}

/** The tables' text (nft's printed form); a table that is undefined must not exist. */
export interface FirewallWant {
  inet: string;
  bridge?: string;
  /**
   * The elements of the bridge table's `pods` set (present with it). The
   * bridge table's text is a function of these alone, so two wants whose
   * inet text is the same differ only here: podDelta().
   */
  pods?: PodSlot[];
}

/** A pod veth and the one IPv4 address it may send as. */
export interface PodSlot {
  veth: string;
  ip: string;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function ipToInt(ip: string): number | undefined {
  const m = IPV4.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

const intToIp = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/**
 * An IPv4 address or CIDR as nft prints it: host bits cleared, /32 as a
 * bare address. undefined for anything else (IPv6 pools are not routed by
 * this data plane, so they get no rule).
 */
export function nftPrefix(cidr: string): string | undefined {
  const [addr, len, extra] = cidr.trim().split('/');
  if (extra !== undefined) return undefined;
  const n = ipToInt(addr);
  const bits = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (n === undefined || !(bits >= 0 && bits <= 32)) return undefined;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const net = intToIp((n & mask) >>> 0);
  return bits === 32 ? net : `${net}/${bits}`;
}

/** Parses a --no-masquerade list ("10.0.0.0/8,172.16.0.0/12"); throws naming the bad entry. */
export function parseCidrList(list: string): string[] {
  const out: string[] = [];
  for (const raw of list.split(',')) {
    const s = raw.trim();
    if (!s) continue;
    const p = nftPrefix(s);
    if (!p) throw new Error(`not an IPv4 address or CIDR: ${s}`);
    out.push(p);
  }
  return out;
}

const uniqueSorted = (xs: (string | undefined)[]) => [...new Set(xs.filter((x): x is string => !!x))].sort();

function elements(xs: string[]): string[] {
  return xs.length ? [`elements = { ${xs.join(', ')} }`] : [];
}

export function firewallWant(i: FirewallInput): FirewallWant {
  const pools = uniqueSorted(i.pools.map(nftPrefix));
  const hosts = uniqueSorted([i.underlayIp, ...i.hosts].map(nftPrefix));
  const keep = uniqueSorted(i.noMasquerade.map(nftPrefix));
  const inet: string[] = [`table inet ${FIREWALL_TABLE} {`];
  if (i.isolation) {
    inet.push(
      'set vteps {', 'type ipv4_addr', ...elements(hosts), '}',
      'chain input {',
      'type filter hook input priority filter; policy accept;',
      // Decapsulation happens after the input hook: only registered hosts may feed berth.vxlan.
      `udp dport ${VXLAN_PORT} ip saddr != @vteps counter drop`,
      '}',
    );
  }
  inet.push(
    'chain postrouting {',
    'type nat hook postrouting priority srcnat; policy accept;',
    ...pools.map((p) => `ip saddr ${p} goto egress`),
    '}',
    'chain egress {',
    ...[...pools, ...hosts, ...keep].map((p) => `ip daddr ${p} return`),
    `snat ip to ${i.underlayIp}`,
    '}',
    '}',
  );
  if (!i.isolation) return { inet: inet.join('\n') };

  const slots = podSlots(i.locals);
  const pods = slots.map((p) => `"${p.veth}" . ${p.ip}`);
  const bridge = [
    `table bridge ${FIREWALL_TABLE} {`,
    `set ${PODS_SET} {`, 'type ifname . ipv4_addr', ...elements(pods), '}',
    'chain prerouting {',
    'type filter hook prerouting priority filter; policy accept;',
    // Frames from a pod's veth (a port of berth0) may carry IPv4 or ARP, and only as that pod's address.
    `iifname != "${POD_VETH_GLOB}" accept`,
    `iifname . ip saddr @${PODS_SET} accept`,
    `iifname . arp saddr ip @${PODS_SET} accept`,
    'counter drop',
    '}',
    '}',
  ];
  return { inet: inet.join('\n'), bridge: bridge.join('\n'), pods: slots };
}

/** Local endpoints as set elements: IPv4 only, each pair once, in element order. */
function podSlots(locals: LocalEndpoint[]): PodSlot[] {
  const seen = new Map<string, PodSlot>();
  for (const l of locals) if (ipToInt(l.ip) !== undefined) seen.set(`"${l.veth}" . ${l.ip}`, { veth: l.veth, ip: l.ip });
  return [...seen.keys()].sort().map((k) => seen.get(k)!);
}

/**
 * What turns the live tables into want by set elements alone: the pods to
 * remove and to add. undefined when anything else differs (the inet table,
 * isolation turned on or off), which only a whole-table write can do.
 */
export function podDelta(live: FirewallWant, want: FirewallWant): { remove: PodSlot[]; add: PodSlot[] } | undefined {
  if (live.inet !== want.inet || !live.pods || !want.pods || live.bridge === undefined || want.bridge === undefined) return undefined;
  const key = (p: PodSlot) => `${p.veth}|${p.ip}`;
  const had = new Set(live.pods.map(key));
  const has = new Set(want.pods.map(key));
  return { remove: live.pods.filter((p) => !has.has(key(p))), add: want.pods.filter((p) => !had.has(key(p))) };
}

/**
 * The whole transaction: for each table, create (a no-op if it exists),
 * delete, and add it back as wanted. `nft -f` applies the file atomically,
 * so no packet ever sees a half-written or missing table.
 */
export function firewallScript(w: FirewallWant): string {
  const out: string[] = [];
  for (const [family, text] of [['inet', w.inet], ['bridge', w.bridge]] as const) {
    out.push(`table ${family} ${FIREWALL_TABLE}`, `delete table ${family} ${FIREWALL_TABLE}`);
    if (text) out.push(text);
  }
  return `${out.join('\n')}\n`;
}

/**
 * The blocks `table <family> berth { ... }` of a `nft list ruleset`
 * listing, keyed by family. A table block ends at the first `}` in column 0.
 */
export function extractTables(ruleset: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = ruleset.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^table (\S+) (\S+) \{$/.exec(lines[i]);
    if (!m) continue;
    let j = i + 1;
    while (j < lines.length && lines[j] !== '}') j++;
    if (m[2] === FIREWALL_TABLE) out.set(m[1], lines.slice(i, j + 1).join('\n'));
    i = j;
  }
  return out;
}

/**
 * A table's text in a form two equal tables share: trimmed lines, no blank
 * lines, counters without their values, each set's elements (which nft may wrap over several lines, in
 * hash order) on one line, sorted.
 */
export function canonicalTable(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith('elements = {')) {
      out.push(lines[i].replace(/\s+/g, ' ').replace(/\bcounter packets \d+ bytes \d+/, 'counter'));
      continue;
    }
    let body = lines[i].slice('elements = {'.length);
    while (!body.trimEnd().endsWith('}') && i + 1 < lines.length) body += ` ${lines[++i]}`;
    body = body.trimEnd().slice(0, -1);
    const elems = body.split(',').map((e) => e.trim().replace(/\s+/g, ' ')).filter((e) => e !== '').sort();
    out.push(`elements = { ${elems.join(', ')} }`);
  }
  return out.join('\n');
}

/** True when the live ruleset holds exactly the wanted tables (and no unwanted one). */
export function firewallMatches(w: FirewallWant, liveRuleset: string): boolean {
  const live = extractTables(liveRuleset);
  for (const [family, text] of [['inet', w.inet], ['bridge', w.bridge]] as const) {
    const have = live.get(family);
    if (text === undefined ? have !== undefined : have === undefined || canonicalTable(have) !== canonicalTable(text)) return false;
  }
  return true;
}

/**
 * Local endpoints for the source check: the watch's, plus pods admitted by an
 * ADD whose lease the watch hasn't shown yet. An admission the watch has
 * caught up with (same veth, same address) is dropped from the map.
 */
export function withAdmitted(locals: LocalEndpoint[], admitted: Map<string, string>): LocalEndpoint[] {
  const byVeth = new Map(locals.map((l) => [l.veth, l.ip]));
  const out = [...locals];
  for (const [veth, ip] of admitted) {
    if (byVeth.get(veth) === ip) admitted.delete(veth);
    else if (!byVeth.has(veth)) out.push({ veth, ip });
  }
  return out;
}
