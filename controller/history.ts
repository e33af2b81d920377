/**
 * Lease history: every state change appends an event under
 * /berth/v1/events/<ip>/<at>-<rand> in the same transaction as the change.
 * Keys sort by time within an address, so "who had 198.18.3.7 at 14:02" is
 * one prefix read and a binary choice of the last event at or before 14:02.
 */
import type { Etcd3 } from 'etcd3';
import type { HistoryQuery } from '../common/api';
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

export async function queryHistory(etcd: Etcd3, q: HistoryQuery): Promise<LeaseEvent[]> {
  if (q.ip === undefined && q.identity === undefined) throw new BerthError('InvalidRequest', 'ip|identity', 'history needs an ip or an identity');
  if (q.limit !== undefined && (!Number.isInteger(q.limit) || q.limit < 1)) throw new BerthError('InvalidRequest', String(q.limit), 'limit must be a positive integer');
  let prefix: string = keys.eventPrefix;
  if (q.ip !== undefined) {
    if (!isIp(q.ip)) throw new BerthError('InvalidRequest', q.ip, 'not an IP address');
    prefix = keys.addressEventPrefix(canonicalIp(q.ip));
  }
  const res = await etcd.getAll().prefix(prefix).exec();
  // etcd's create revision is the true order of the changes; clocks of replicas may tie or skew.
  const kvs = [...res.kvs].sort((a, b) => Number(BigInt(a.create_revision) - BigInt(b.create_revision)));
  const events = kvs.map((kv) => JSON.parse(kv.value.toString()) as LeaseEvent);
  return selectEvents(events, q);
}
