/**
 * Replays the plugin's DEL journal (common/del-journal.ts): the DELs the
 * plugin recorded while the agent was down. Run at agent start, and again
 * whenever the daemon likes (it is idempotent); oldest entry first.
 *
 * - An entry that succeeds is removed, but only if it is still the one that
 *   was read (a plugin may have re-journalled the attachment meanwhile).
 * - An entry that fails stays for the next replay.
 * - An entry superseded by a later ADD of the same attachment is dropped
 *   unapplied. Fencing alone would not save that ADD when it reused the
 *   container id: the binding's containerId would still match. A handler
 *   from createCniHandler checks this under the attachment's lock (ADD
 *   removes older entries of its attachment, replay re-reads the entry right
 *   before applying it); any other handler just gets the DEL.
 * - Corrupt entries are logged and removed: they can never succeed.
 */
import { readDelJournal, removeDelEntry, removeDelEntryIfUnchanged } from '../common/del-journal';
import { castError } from '../common/errors';
import type { Logger } from '../common/log';
import type { CniHandler } from './cni-api';
import { replayerOf } from './cni-handlers';

export async function replayJournal(dir: string, handler: CniHandler, log: Logger): Promise<{ replayed: number; failed: number }> {
  const { entries, corrupt } = await readDelJournal(dir);
  for (const id of corrupt) {
    log.warn('removing a corrupt DEL journal entry', { dir, id });
    await removeDelEntry(dir, id).catch((e) => log.warn('cannot remove corrupt entry', { id, error: castError(e).message }));
  }
  const replayer = replayerOf(handler);
  let replayed = 0;
  let failed = 0;
  for (const entry of entries) {
    const req = entry.request;
    const fields = { id: entry.id, containerId: req.containerId, ifName: req.ifName, pool: req.pool, journaledAt: entry.journaledAt };
    const resp = replayer ? await replayer(dir, entry) : await handler(req);
    if (resp === 'superseded') {
      log.info('journalled DEL superseded by a later ADD; dropped', fields);
      continue;
    }
    if (!resp.ok) {
      failed++;
      log.warn('journalled DEL failed; kept for the next replay', { ...fields, error: resp.error.code, details: resp.error.details });
      continue;
    }
    replayed++;
    try {
      await removeDelEntryIfUnchanged(dir, entry);
    } catch (e) {
      log.warn('replayed DEL but could not remove its entry (it will replay again, harmlessly)', { ...fields, error: castError(e).message });
    }
  }
  if (entries.length + corrupt.length > 0) log.info('DEL journal replayed', { dir, replayed, failed, corrupt: corrupt.length });
  return { replayed, failed };
}
