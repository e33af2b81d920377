/**
 * Lease history: every state change appends an event under
 * /berth/v1/events/<ip>/<at>-<rand> in the same transaction as the change,
 * and a copy under /berth/v1/identity-events/<identity>/<at>-<rand>.
 * Keys sort by time within an address, so "who had 198.18.3.7 at 14:02" is
 * one prefix read and a binary choice of the last event at or before 14:02;
 * the history of an identity is one read of its own prefix. Both prefixes are
 * bounded by the expirer's trimming (count per address/identity, and age), so
 * a query reads a bounded number of events whatever the cluster's size.
 *
 * Pages: the newest `limit` matching events, oldest first; `continue` names
 * the create revision before which the next (older) page ends.
 */
import type { Etcd3 } from 'etcd3';
import type { HistoryPage, HistoryQuery } from '../common/api';
import { rangeAll } from '../common/etcd-paged';
import { canonicalIp, isIp } from '../common/cidr';
import { BerthError } from '../common/errors';
import { keys } from '../common/keys';
import type { LeaseEvent } from '../common/records';

export function parseInstant(text: string | undefined, name: string): number | undefined {
  if (text === undefined || text === '') return undefined;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new BerthError('InvalidRequest', `${name}=${text}`, `${name} must be an ISO 8601 time`);
  return ms;
}

/** Pure filter over events sorted by time; `at` keeps only the one in force then. */
export function selectEvents(events: LeaseEvent[], q: HistoryQuery): LeaseEvent[] {
  const at = parseInstant(q.at, 'at');
  const since = parseInstant(q.since, 'since');
  const until = parseInstant(q.until, 'until');
  let out = events.filter((e) => q.identity === undefined || e.identity === q.identity);
  if (at !== undefined) {
    const before = out.filter((e) => Date.parse(e.at) <= at);
    // One event per address: the last change at or before the instant.
    const last = new Map<string, LeaseEvent>();
    for (const e of before) last.set(e.ip, e);
    return [...last.values()];
  }
  out = out.filter((e) => (since === undefined || Date.parse(e.at) >= since) && (until === undefined || Date.parse(e.at) <= until));
  const limit = q.limit ?? 1000;
  return out.slice(Math.max(0, out.length - limit));
}

export async function queryHistory(etcd: Etcd3, q: HistoryQuery): Promise<HistoryPage> {
  if (q.ip === undefined && q.identity === undefined) throw new BerthError('InvalidRequest', 'ip|identity', 'history needs an ip or an identity');
  if (q.limit !== undefined && (!Number.isInteger(q.limit) || q.limit < 1)) throw new BerthError('InvalidRequest', String(q.limit), 'limit must be a positive integer');
  const before = q.continue !== undefined ? decodeHistoryToken(q.continue) : undefined;
  let prefix: string;
  if (q.ip !== undefined) {
    if (!isIp(q.ip)) throw new BerthError('InvalidRequest', q.ip, 'not an IP address');
    prefix = keys.addressEventPrefix(canonicalIp(q.ip));
  } else {
    prefix = keys.identityEvents(q.identity as string);
  }
  const res = await rangeAll(etcd, prefix);
  // etcd's create revision is the true order of the changes; clocks of replicas may tie or skew.
  const kvs = [...res.kvs].sort((a, b) => Number(BigInt(a.create_revision) - BigInt(b.create_revision)))
    .filter((kv) => before === undefined || BigInt(kv.create_revision) < before);
  const revOf = new Map<LeaseEvent, bigint>();
  const events = kvs.map((kv) => {
    const e = JSON.parse(kv.value.toString()) as LeaseEvent;
    revOf.set(e, BigInt(kv.create_revision));
    return e;
  });
  if (q.at !== undefined) return { events: selectEvents(events, q) };
  const all = selectEvents(events, { ...q, limit: Number.MAX_SAFE_INTEGER });
  const limit = q.limit ?? 1000;
  const page = all.slice(Math.max(0, all.length - limit));
  return page.length < all.length ? { events: page, continue: encodeHistoryToken(revOf.get(page[0]) as bigint) } : { events: page };
}

function encodeHistoryToken(rev: bigint): string {
  return Buffer.from(JSON.stringify({ before: String(rev) })).toString('base64url');
}

function decodeHistoryToken(text: string): bigint {
  try {
    const t = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as { before?: unknown };
    if (typeof t?.before === 'string' && /^\d+$/.test(t.before)) return BigInt(t.before);
  } catch { /* reported below */ }
  throw new BerthError('InvalidRequest', 'continue', 'continue token is not one this API issued');
}
