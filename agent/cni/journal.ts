/**
 * The two journal questions the handlers ask about one attachment's entry in
 * the plugin's DEL journal (common/del-journal.ts: one file `<id>.json` per
 * attachment, id = journalId(pool, containerId, ifName)).
 *
 * - ADD drops an entry written before it started: DEL then ADD of the same
 *   attachment nets out to "attached", so replaying that DEL later would
 *   undo a live ADD (the entry's containerId still matches the binding, so
 *   fencing would not stop it).
 * - Replay re-reads the entry under the attachment lock right before
 *   applying it: if an ADD dropped or a plugin replaced it meanwhile, the
 *   replay skips it.
 */
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { AgentRequest } from '../../common/agent-protocol';
import { journalId, removeDelEntryIfUnchanged, type DelJournalEntry } from '../../common/del-journal';

async function readEntry(dir: string, id: string): Promise<Partial<DelJournalEntry> | undefined> {
  // Almost always absent: say so without a trip through the (busy) thread pool.
  if (!existsSync(join(dir, `${id}.json`))) return undefined;
  try {
    return JSON.parse(await fs.readFile(join(dir, `${id}.json`), 'utf8')) as Partial<DelJournalEntry>;
  } catch {
    return undefined; // absent or unreadable: nothing pending that we could honour
  }
}

/** Removes the attachment's pending DEL if it was journalled before `before`. Never throws. */
export async function dropSupersededDel(dir: string, req: Pick<AgentRequest, 'pool' | 'containerId' | 'ifName'>, before: Date): Promise<boolean> {
  const id = journalId(req);
  const cur = await readEntry(dir, id);
  if (typeof cur?.journaledAt !== 'string' || !(Date.parse(cur.journaledAt) <= before.getTime())) return false;
  try {
    return await removeDelEntryIfUnchanged(dir, { ...(cur as DelJournalEntry), id });
  } catch {
    return false;
  }
}

/** The entry is still in the journal exactly as it was read. */
export async function stillPending(dir: string, entry: DelJournalEntry): Promise<boolean> {
  return (await readEntry(dir, entry.id))?.journaledAt === entry.journaledAt;
}
