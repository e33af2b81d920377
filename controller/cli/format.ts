/**
 * berthctl's human output, pure: aligned tables, `show` blocks, the one-line
 * answer to "who had this address at T", and the one stderr line a failure
 * becomes. Nothing here does I/O; `now` is passed in where ages are shown.
 *
 * Times print as UTC ISO 8601 to the second (sortable, zone-free, and what
 * `--at` accepts back); `show` adds a relative age for the reader.
 */
import type { ClusterStatus, ForgetResponse, HostView, LeaseEvent, LeaseView, PoolUsage } from '../../common/api';
import { isBerthError } from '../../common/errors';
import { formatDuration } from './parse';

const NONE = '-';

/** Columns separated by two spaces, padded to the widest cell; no trailing blanks. */
export function table(headers: string[], rows: string[][]): string {
  // A loop, not Math.max(...rows): 100k+ arguments overflow the stack.
  const widths = headers.map((h) => h.length);
  for (const r of rows) for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i], (r[i] ?? '').length);
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** "Label:  value" lines with the values aligned. */
export function block(fields: [string, string][]): string {
  const w = Math.max(...fields.map(([k]) => k.length)) + 1;
  return fields.map(([k, v]) => `${`${k}:`.padEnd(w)}  ${v}`.trimEnd()).join('\n') + '\n';
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

const CANONICAL_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

export function shortTime(iso: string | undefined): string {
  if (!iso) return NONE;
  // Berth writes toISOString() form: drop the milliseconds without a Date round trip.
  if (CANONICAL_MS.test(iso)) return `${iso.slice(0, 19)}Z`;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? iso : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Like shortTime, but keeps milliseconds when there are any (for instants an operator pasted). */
export function exactTime(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? iso : new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
}

/** "3h12m ago" / "in 40m"; seconds dropped once minutes are shown. */
export function age(iso: string | undefined, now: number): string {
  if (!iso) return '';
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return '';
  const secs = Math.round((now - ms) / 1000);
  const abs = Math.abs(secs);
  const coarse = abs >= 86400 ? abs - (abs % 3600) : abs >= 60 ? abs - (abs % 60) : abs;
  const text = formatDuration(coarse);
  return secs >= 0 ? `${text} ago` : `in ${text}`;
}

function timeWithAge(iso: string | undefined, now: number): string {
  if (!iso) return NONE;
  return `${shortTime(iso)} (${age(iso, now)})`;
}

/** Docker's habit: 12 characters of a container id are enough to find it. */
export function shortId(id: string | undefined): string {
  if (!id) return NONE;
  return id.length > 12 ? id.slice(0, 12) : id;
}

const v4 = (ip: string) => (/^\d+\.\d+\.\d+\.\d+$/.test(ip) ? ip.split('.').reduce((n, o) => n * 256 + Number(o), 0) : null);

/** Numeric order for IPv4, text order for IPv6 after all IPv4. */
export function compareIp(a: string, b: string): number {
  return compareKeys(v4(a), a, v4(b), b);
}

function compareKeys(x: number | null, a: string, y: number | null, b: string): number {
  if (x !== null && y !== null) return x - y;
  if (x !== null) return -1;
  if (y !== null) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortLeases(leases: LeaseView[]): LeaseView[] {
  // Each address parsed once, not once per comparison: 100k leases sort in ~100 ms instead of ~1 s.
  const keyed = leases.map((l) => ({ l, n: v4(l.ip) }));
  keyed.sort((a, b) => (a.l.pool === b.l.pool ? compareKeys(a.n, a.l.ip, b.n, b.l.ip) : a.l.pool < b.l.pool ? -1 : 1));
  return keyed.map((k) => k.l);
}

function since(l: LeaseView): string | undefined {
  return l.binding?.boundAt ?? l.updatedAt;
}

function expires(l: LeaseView): string {
  if (l.pinned) return 'never';
  return l.heldUntil ? shortTime(l.heldUntil) : NONE;
}

export function leasesTable(leases: LeaseView[]): string {
  return table(
    ['IP', 'POOL', 'IDENTITY', 'STATE', 'HOST', 'CONTAINER', 'SINCE', 'PINNED', 'EXPIRES'],
    sortLeases(leases).map((l) => [
      l.ip, l.pool, l.identity, l.state, l.binding?.host ?? NONE, shortId(l.binding?.containerId),
      shortTime(since(l)), l.pinned ? 'yes' : 'no', l.state === 'bound' ? NONE : expires(l),
    ]),
  );
}

function bindingText(b: LeaseView['binding']): string {
  if (!b) return NONE;
  return `host ${b.host}, container ${b.containerId}, interface ${b.ifName}, bound ${shortTime(b.boundAt)}`;
}

export function leaseDetail(l: LeaseView, now: number): string {
  return block([
    ['IP', l.ip],
    ['Pool', l.pool],
    ['Identity', l.identity],
    ['State', l.state],
    ['Pinned', l.pinned ? 'yes (never expires; only an operator frees it)' : 'no'],
    ['Host', l.binding?.host ?? NONE],
    ['Container', l.binding?.containerId ?? NONE],
    ['Interface', l.binding?.ifName ?? NONE],
    ['Network', l.binding ? l.binding.network ?? 'not recorded' : NONE],
    ['Since', timeWithAge(since(l), now)],
    ['Held until', l.state === 'bound' ? NONE : l.pinned ? 'never' : timeWithAge(l.heldUntil, now)],
    ['Fencing revision', l.revision],
    ['Last binding', bindingText(l.lastBinding)],
    ['Created', shortTime(l.createdAt)],
  ]);
}

export function usedPercent(p: PoolUsage): string {
  if (p.size <= 0) return '0%';
  const pct = ((p.size - p.free) / p.size) * 100;
  if (pct > 0 && pct < 0.1) return '<0.1%';
  return `${pct === 0 || pct >= 10 ? Math.round(pct) : pct.toFixed(1)}%`;
}

export function poolsTable(pools: PoolUsage[]): string {
  return table(
    ['NAME', 'CIDR', 'GATEWAY', 'SIZE', 'BOUND', 'HELD', 'PINNED', 'FREE', 'USED', 'HOLD'],
    [...pools].sort((a, b) => (a.name < b.name ? -1 : 1)).map((p) => [
      p.name, p.cidr, p.gateway, String(p.size), String(p.bound), String(p.held), String(p.pinned), String(p.free),
      usedPercent(p), formatDuration(p.holdSeconds),
    ]),
  );
}

export function poolDetail(p: PoolUsage): string {
  return block([
    ['Name', p.name],
    ['CIDR', p.cidr],
    ['Gateway', p.gateway],
    ['Reserved', p.reserved.length ? p.reserved.join(', ') : NONE],
    ['Hold', `${formatDuration(p.holdSeconds)} (${p.holdSeconds}s)${p.holdPolicy === 'explicit-only' ? ', explicit identities only' : ''}`],
    ['Created', shortTime(p.createdAt)],
    ['Size', `${p.size} leasable addresses`],
    ['Bound', String(p.bound)],
    ['Held', String(p.held)],
    ['Pinned', `${p.pinned} (counted in bound or held)`],
    ['Free', String(p.free)],
    ['Used', `${usedPercent(p)} (${p.size - p.free} of ${p.size})`],
  ]);
}

export function hostsTable(hosts: HostView[]): string {
  return table(
    ['NAME', 'UNDERLAY', 'VTEP MAC', 'VNI', 'POOL', 'LEASES', 'REGISTERED', 'LIVENESS'],
    [...hosts].sort((a, b) => (a.name < b.name ? -1 : 1)).map((h) => [
      h.name, h.underlayIp, h.vtepMac, String(h.vni), h.pool, String(h.leases), shortTime(h.registeredAt), liveness(h),
    ]),
  );
}

/** alive | absent since T, dead at T | dead (freeing leases) */
export function liveness(h: HostView): string {
  if (h.dead) return `dead since ${shortTime(h.dead.at)}, freeing leases`;
  if (h.alive) return 'alive';
  if (h.absent) return `absent since ${shortTime(h.absent.since)}, dead at ${shortTime(h.absent.deadAt)}`;
  return 'absent';
}

/**
 * `berthctl status`: three sections, each a table (or one "none" line).
 * Ages use the CLI's clock against the times the controller reports.
 */
export function statusText(s: ClusterStatus, now: number): string {
  const hosts = s.hosts.length === 0 ? 'no hosts registered\n' : table(
    ['HOST', 'AGENT', 'LAST PASS', 'POOL', 'UNDERLAY', 'LEASES'],
    s.hosts.map((h) => [
      h.name, h.liveness === 'absent' && h.deadAt ? `absent, dead at ${shortTime(h.deadAt)}` : h.liveness,
      h.lastPassAt ? age(h.lastPassAt, now) : NONE, h.pool, h.underlayIp, String(h.leases),
    ]),
  );
  const pools = s.pools.length === 0 ? 'no pools\n' : table(
    ['POOL', 'CIDR', 'SIZE', 'BOUND', 'HELD', 'PINNED', 'FREE', 'USED'],
    s.pools.map((p) => [p.name, p.cidr, String(p.size), String(p.bound), String(p.held), String(p.pinned), String(p.free), usedPercent(p)]),
  );
  const attention = s.attentionTotal === 0 ? 'no lease needs attention\n' : table(
    ['IP', 'POOL', 'IDENTITY', 'STATE', 'HOST', 'WHY'],
    s.attention.map((l) => [l.ip, l.pool, l.identity, `${l.state}${l.pinned ? ', pinned' : ''}`, l.host ?? NONE, l.reason]),
  ) + (s.attentionTotal > s.attention.length ? `... and ${s.attentionTotal - s.attention.length} more\n` : '');
  return `${hosts}\n${pools}\n${attention}`;
}

export function forgetLine(r: ForgetResponse): string {
  const freed = `${r.orphaned} bound lease(s) now held${r.pinned ? ` (${r.pinned} pinned, kept pinned)` : ''}${r.freed ? `, ${r.freed} freed (no hold)` : ''}`;
  return r.interrupted
    ? `host ${r.host}: its agent came back midway; ${freed}, the rest stay bound to it\n`
    : `forgot host ${r.host}: ${freed}; their identities can bind on another host\n`;
}

export function historyTable(events: LeaseEvent[]): string {
  return table(
    ['TIME', 'EVENT', 'IP', 'POOL', 'IDENTITY', 'HOST', 'CONTAINER', 'STATE', 'BY'],
    events.map((e) => [
      shortTime(e.at), e.kind, e.ip, e.pool, e.identity, e.host ?? NONE, shortId(e.containerId),
      `${e.oldState}->${e.newState}`, e.actor ?? NONE,
    ]),
  );
}

/**
 * The answer to "who had <subject> at <at>": one sentence per address, from
 * the event in force at that instant (the API returns the last one at or before it).
 */
export function describeAt(subject: string, at: string, events: LeaseEvent[]): string {
  const when = exactTime(at);
  if (events.length === 0) return `${subject} at ${when}: no lease recorded at or before that time\n`;
  return [...events].sort((a, b) => compareIp(a.ip, b.ip)).map((e) => {
    const change = `${e.kind} ${shortTime(e.at)}`;
    switch (e.newState) {
      case 'bound':
        return `${e.ip} at ${when}: bound to ${e.identity} on host ${e.host ?? '?'}, container ${e.containerId ?? '?'} (pool ${e.pool}; ${change})`;
      case 'held':
        return `${e.ip} at ${when}: held for ${e.identity}, no container attached (pool ${e.pool}; ${change}${e.host ? `, last on host ${e.host}` : ''})`;
      default:
        return `${e.ip} at ${when}: free (pool ${e.pool}; ${change}, previously ${e.identity})`;
    }
  }).join('\n') + '\n';
}

export interface ErrorContext {
  controller: string;
  tokenGiven: boolean;
}

/**
 * Any failure → exactly one line (no trailing newline) and an exit code from
 * the error table. Only a non-Berth error (a bug in berthctl) exits 1 as internal.
 */
export function errorLine(e: unknown, ctx: ErrorContext): { line: string; exitCode: number } {
  if (isBerthError(e)) {
    let text: string;
    if (e.kind === 'TryAgainLater' && (e.message === 'controller unreachable' || e.message === 'controller connection failed')) {
      const reason = (e.details ?? '').replace(/^\S+?:\/\/[^/\s]+?: /, '');
      text = `${e.message} at ${ctx.controller}${reason ? ` (${reason})` : ''}`;
    } else {
      text = e.details !== undefined && e.details !== '' ? `${e.message}: ${e.details}` : e.message;
      if (e.kind === 'Unauthorized' && !ctx.tokenGiven && e.message === 'missing or invalid bearer token') text += ' (pass --token-file or set BERTH_TOKEN_FILE)';
    }
    return { line: `berthctl: ${oneLine(text)}`, exitCode: e.exitCode };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { line: `berthctl: internal error: ${oneLine(message)}`, exitCode: 1 };
}

export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
