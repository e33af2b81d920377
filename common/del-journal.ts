/**
 * The on-disk journal of DELs that could not be carried out: written by the
 * `berth` relay (cni/relay/journal.c, same format) when no agent answers, and
 * by the agent when no controller does.
 *
 * Why: the runtime "will retry the deletion for a long time" only if DEL
 * fails, and a failing DEL blocks pod teardown. So when the agent is down the
 * plugin records the DEL here and reports success; the agent replays the
 * journal when it comes back (readDelJournal → handle → removeDelEntry).
 *
 * Layout: one file per pending DEL in `dir` (default /var/lib/berth/del-journal),
 * named after a hash of (pool, containerId, ifName). A file is written to a
 * dot-prefixed temp name, fsynced, then renamed into place, so
 *   - a reader never sees a half-written entry (rename is atomic);
 *   - concurrent plugin processes need no lock;
 *   - a repeated DEL for the same attachment replaces its entry instead of
 *     growing the journal (DEL is idempotent, so keeping the latest is enough).
 * The journal is bounded: at most MAX_JOURNAL_ENTRIES entries and
 * MAX_ENTRY_BYTES per entry. When full, appendDel throws TryAgainLater, so the
 * runtime retries the DEL rather than Berth silently leaking a lease.
 *
 * Replay caveat for the agent: an entry carries `journaledAt`. If the same
 * (containerId, ifName) was ADDed again after that time, the entry is stale
 * and must be dropped, not applied.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from './errors';
import type { AgentRequest } from './agent-protocol';

export { DEFAULT_JOURNAL_DIR } from './cni-config';
export const MAX_JOURNAL_ENTRIES = 1024;
export const MAX_ENTRY_BYTES = 64 * 1024;
const PREFIX = 'del-';
const SUFFIX = '.json';

export interface DelJournalEntry {
  /** File-name stem; pass it to removeDelEntry. */
  id: string;
  v: 1;
  /** ISO-8601 time the plugin wrote the entry. */
  journaledAt: string;
  /** The DEL exactly as it would have been sent to the agent. */
  request: AgentRequest;
}

export interface JournalOptions {
  maxEntries?: number;
  maxEntryBytes?: number;
  now?: () => Date;
}


const FNV_PRIME = 0x100000001b3n;
const MASK64 = (1n << 64n) - 1n;
/** Offset bases of the two FNV-1a passes; cni/relay/journal.c uses the same. */
const FNV_BASES = [0xcbf29ce484222325n, 0x6c62272e07bb0142n] as const;

/**
 * Stable id of an attachment's entry: same pool+container+ifname, same file.
 * Two 64-bit FNV-1a hashes of the UTF-8 bytes of pool\0containerId\0ifName,
 * in hex: the `berth` relay (cni/relay/journal.c) computes the same id in C
 * when it journals a DEL, so its entries and the agent's name the same file.
 * Not a security boundary: only root writes the journal.
 */
export function journalId(req: Pick<AgentRequest, 'pool' | 'containerId' | 'ifName'>): string {
  const bytes = Buffer.from(`${req.pool}\0${req.containerId}\0${req.ifName}`, 'utf8');
  const hex = FNV_BASES.map((base) => {
    let h: bigint = base;
    for (const b of bytes) h = ((h ^ BigInt(b)) * FNV_PRIME) & MASK64;
    return h.toString(16).padStart(16, '0');
  });
  return `${PREFIX}${hex.join('')}`;
}

function ioError(op: string, e: unknown): BerthError {
  const err = e as NodeJS.ErrnoException;
  return new BerthError('IO', `del-journal ${op}: ${err.code ?? ''} ${err.message ?? String(e)}`.trim());
}

async function listIds(dir: string): Promise<string[]> {
  try {
    const names = await fs.readdir(dir);
    return names.filter((n) => n.startsWith(PREFIX) && n.endsWith(SUFFIX)).map((n) => n.slice(0, -SUFFIX.length));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw ioError('readdir', e);
  }
}

/** How many entries wait in the journal (a readdir, no reads): the agent's depth gauge. */
export async function journalDepth(dir: string): Promise<number> {
  return (await listIds(dir)).length;
}

/**
 * Records a DEL durably. Returns the entry. Throws TryAgainLater when the
 * journal is full or the entry too large, IO when the disk refuses.
 */
export async function appendDel(dir: string, request: AgentRequest, opts: JournalOptions = {}): Promise<DelJournalEntry> {
  if (request.verb !== 'DEL') throw new BerthError('Internal', `del-journal: refusing to journal ${request.verb}`);
  const maxEntries = opts.maxEntries ?? MAX_JOURNAL_ENTRIES;
  const maxBytes = opts.maxEntryBytes ?? MAX_ENTRY_BYTES;
  const id = journalId(request);
  const entry: DelJournalEntry = { id, v: 1, journaledAt: (opts.now?.() ?? new Date()).toISOString(), request };
  const body = `${JSON.stringify(entry)}\n`;
  if (Buffer.byteLength(body) > maxBytes) {
    throw new BerthError('TryAgainLater', `del-journal: entry of ${Buffer.byteLength(body)} bytes exceeds ${maxBytes}`);
  }
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ioError('mkdir', e);
  }
  const ids = await listIds(dir);
  if (ids.length >= maxEntries && !ids.includes(id)) {
    throw new BerthError('TryAgainLater', `del-journal full: ${ids.length} entries in ${dir}`);
  }
  const final = join(dir, `${id}${SUFFIX}`);
  const tmp = join(dir, `.${id}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fh = await fs.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, final);
  } catch (e) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw ioError('write', e);
  }
  // Make the rename itself durable; best effort (some filesystems refuse fsync on dirs).
  try {
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    /* the entry is written; only its survival across a power cut is less certain */
  }
  return entry;
}

export interface JournalContents {
  /** Oldest first. */
  entries: DelJournalEntry[];
  /** Ids of files that are not valid entries; the agent should log and remove them. */
  corrupt: string[];
}

function isEntry(x: unknown, id: string): x is DelJournalEntry {
  const e = x as Partial<DelJournalEntry> | null;
  return (
    typeof e === 'object' && e !== null && e.v === 1 && e.id === id && typeof e.journaledAt === 'string' &&
    typeof e.request === 'object' && e.request !== null && e.request.verb === 'DEL' &&
    typeof e.request.containerId === 'string' && typeof e.request.ifName === 'string' && typeof e.request.pool === 'string'
  );
}

/** Reads every pending DEL. A missing directory is an empty journal. */
export async function readDelJournal(dir: string): Promise<JournalContents> {
  const out: JournalContents = { entries: [], corrupt: [] };
  for (const id of await listIds(dir)) {
    let text: string;
    try {
      text = await fs.readFile(join(dir, `${id}${SUFFIX}`), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed concurrently
      throw ioError('read', e);
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (isEntry(parsed, id)) out.entries.push(parsed);
      else out.corrupt.push(id);
    } catch {
      out.corrupt.push(id);
    }
  }
  out.entries.sort((a, b) => (a.journaledAt < b.journaledAt ? -1 : a.journaledAt > b.journaledAt ? 1 : a.id.localeCompare(b.id)));
  return out;
}

/** Removes one entry; removing an absent entry is not an error. */
export async function removeDelEntry(dir: string, id: string): Promise<void> {
  if (!/^del-[0-9a-f]{32}$/.test(id)) throw new BerthError('InvalidRequest', `del-journal: bad entry id ${JSON.stringify(id)}`);
  try {
    await fs.rm(join(dir, `${id}${SUFFIX}`), { force: true });
  } catch (e) {
    throw ioError('remove', e);
  }
}

/**
 * Removes an entry only if it is still the one that was read (same
 * journaledAt): a DEL re-journaled during replay is kept for the next pass.
 */
export async function removeDelEntryIfUnchanged(dir: string, entry: DelJournalEntry): Promise<boolean> {
  const path = join(dir, `${entry.id}${SUFFIX}`);
  try {
    const cur = JSON.parse(await fs.readFile(path, 'utf8')) as Partial<DelJournalEntry>;
    if (cur.journaledAt !== entry.journaledAt) return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    // unreadable now: fall through and remove it
  }
  await removeDelEntry(dir, entry.id);
  return true;
}

/** Removes temp files left by writers that died mid-append (older than maxAgeMs). */
export async function pruneStaleTemp(dir: string, maxAgeMs = 60_000, now = Date.now()): Promise<number> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw ioError('readdir', e);
  }
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(`.${PREFIX}`) || !name.endsWith('.tmp')) continue;
    const st = await fs.stat(join(dir, name)).catch(() => undefined);
    if (st && now - st.mtimeMs > maxAgeMs) {
      await fs.rm(join(dir, name), { force: true }).catch(() => undefined);
      n++;
    }
  }
  return n;
}
