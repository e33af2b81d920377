/**
 * Paged reads of an etcd key range: the one way Berth reads a whole prefix.
 *
 * A single Range of a large prefix is one gRPC message; at 100k leases that
 * is ~40 MB, ten times the client's 4 MiB receive limit, and even below the
 * limit it holds the whole answer in memory twice (protobuf + JSON). So every
 * prefix read goes page by page: `limit` keys, then again from the last key
 * + "\0", every page pinned to the revision of the first one so the pages
 * form one consistent snapshot. Callers consume a page before the next one is
 * fetched, so memory is bounded by the page size, not the data. A page too
 * big for the client's receive limit (RESOURCE_EXHAUSTED) is fetched again at
 * half the size, down to one key, so values of any size page correctly.
 *
 * etcd cost note (3.4): a limited Range still walks the in-memory index of
 * the whole range to count it, but reads only `limit` values from disk.
 */
import type { Etcd3, IKeyValue } from 'etcd3';

/**
 * Keys per page when the client does not say otherwise: ~2 MB of leases.
 * Fewer, larger pages matter: etcd 3.4 walks the index of the whole rest of
 * the range for every page (to count it), so paging n keys costs
 * O(n^2 / page) there; 100k leases took 3.7 s in pages of 1000, 1.4 s in
 * pages of 5000. A page that still exceeds the receive limit (large values)
 * is asked again at half the size.
 */
export const DEFAULT_PAGE_SIZE = 5000;

const pageSizes = new WeakMap<object, number>();

/** Sets the page size every paged read through this client uses (tests shrink it). */
export function setPageSize(etcd: Etcd3, size: number): void {
  if (!Number.isInteger(size) || size < 1) throw new Error(`page size must be a positive integer, got ${size}`);
  pageSizes.set(etcd, size);
}

export function pageSizeOf(etcd: Etcd3): number {
  return pageSizes.get(etcd) ?? DEFAULT_PAGE_SIZE;
}

/** The smallest key greater than every key starting with `prefix` (etcd's range_end). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) { const end = Buffer.from(b.subarray(0, i + 1)); end[i]++; return end; }
  }
  return Buffer.from([0]);
}

export interface PageOptions {
  /** Read at this revision (all pages); default: the revision of the first page. */
  revision?: string | bigint;
  /** Start after this key (exclusive), e.g. from a continue token. */
  after?: string;
  /** Keys only, no values. */
  keysOnly?: boolean;
  pageSize?: number;
  /** Stop after this many keys in total (the rest is left for a continue token). */
  max?: number;
}

export interface PagedResult {
  /** The snapshot revision every page was read at. */
  revision: string;
  /** Keys delivered. */
  count: number;
  /** The last key delivered when the range was not exhausted (max reached or the callback said stop). */
  lastKey: string | null;
}

/**
 * Reads [prefix, prefixEnd) page by page at one revision, calling `onPage`
 * with each page's key-values in key order. `onPage` returning false stops
 * the read early (its last key comes back as `lastKey`).
 */
export async function pagedRange(
  etcd: Etcd3, prefix: string, onPage: (kvs: IKeyValue[]) => boolean | void | Promise<boolean | void>, o: PageOptions = {},
): Promise<PagedResult> {
  let pageSize = o.pageSize ?? pageSizeOf(etcd);
  const end = prefixEnd(prefix);
  let start = o.after !== undefined ? Buffer.concat([Buffer.from(o.after), Buffer.from([0])]) : Buffer.from(prefix);
  let revision = o.revision !== undefined ? String(o.revision) : undefined;
  let count = 0;
  for (;;) {
    const want = o.max !== undefined ? Math.min(pageSize, o.max - count) : pageSize;
    if (want <= 0) break;
    let res;
    try {
      res = await etcd.kv.range({
        key: start, range_end: end, limit: want, keys_only: o.keysOnly === true, ...(revision !== undefined ? { revision } : {}),
      });
    } catch (e) {
      if (want > 1 && isTooLarge(e)) { pageSize = Math.max(1, Math.floor(want / 2)); continue; }
      throw e;
    }
    revision ??= String(res.header.revision);
    count += res.kvs.length;
    const goOn = res.kvs.length > 0 ? await onPage(res.kvs) : true;
    const last = res.kvs.length > 0 ? res.kvs[res.kvs.length - 1].key : null;
    if (!res.more || last === null) return { revision, count, lastKey: null };
    if (goOn === false || (o.max !== undefined && count >= o.max)) return { revision, count, lastKey: last.toString() };
    start = Buffer.concat([last, Buffer.from([0])]);
  }
  return { revision: revision ?? '0', count, lastKey: null };
}

function isTooLarge(e: unknown): boolean {
  return /RESOURCE_EXHAUSTED|larger than max/.test((e as Error)?.message ?? '');
}

/** Collects a whole prefix (paged) into memory; only for ranges the caller knows are bounded. */
export async function rangeAll(etcd: Etcd3, prefix: string, o: PageOptions = {}): Promise<{ revision: string; kvs: IKeyValue[] }> {
  const kvs: IKeyValue[] = [];
  const r = await pagedRange(etcd, prefix, (page) => { kvs.push(...page); }, o);
  return { revision: r.revision, kvs };
}
