/**
 * Replays the DEL journal (common/del-journal.ts): the DELs the plugin
 * recorded while the agent was down, and those the agent recorded while no
 * controller replica answered. startJournalReplay (below) runs it at agent
 * start, on every new entry and periodically; it is idempotent; oldest
 * entry first.
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
import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import { readDelJournal, removeDelEntry, removeDelEntryIfUnchanged } from '../common/del-journal';
import { castError } from '../common/errors';
import type { Logger } from '../common/log';
import type { CniHandler } from './cni-api';
import { replayerOf } from './cni-handlers';

export type ReplayResult = 'replayed' | 'failed' | 'superseded';

export async function replayJournal(
  dir: string, handler: CniHandler, log: Logger, onEntry?: (r: ReplayResult) => void,
): Promise<{ replayed: number; failed: number }> {
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
      onEntry?.('superseded');
      continue;
    }
    if (!resp.ok) {
      failed++;
      onEntry?.('failed');
      log.warn('journalled DEL failed; kept for the next replay', { ...fields, error: resp.error.code, details: resp.error.details });
      continue;
    }
    replayed++;
    try {
      await removeDelEntryIfUnchanged(dir, entry);
    } catch (e) {
      log.warn('replayed DEL but could not remove its entry (it will replay again, harmlessly)', { ...fields, error: castError(e).message });
    }
    onEntry?.('replayed');
  }
  if (entries.length + corrupt.length > 0) log.info('DEL journal replayed', { dir, replayed, failed, corrupt: corrupt.length });
  return { replayed, failed };
}

export interface JournalReplayer {
  /** Resolves when the first replay (run by startJournalReplay) is done. */
  readonly first: Promise<void>;
  /** Asks for a replay; calls while one runs coalesce into one more. */
  kick(why: string): void;
  close(): void;
}

/**
 * Replays the journal now, whenever an entry appears in it, and every
 * periodMs (entries that failed, e.g. with the controller down, wait for
 * that). The watch starts before the first replay, so an entry the plugin
 * writes at any moment after start (say, a DEL that found the socket not yet
 * open) is replayed at once instead of waiting a whole period, while the
 * identity it holds can't start on another host. fs.watch is inotify here;
 * if it can't be set up, the period alone still replays everything.
 */
export function startJournalReplay(
  dir: string, handler: CniHandler, log: Logger, o: { periodMs: number; onEntry?: (r: ReplayResult) => void },
): JournalReplayer {
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;
  const run = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await replayJournal(dir, handler, log, o.onEntry);
        } catch (e) {
          log.warn('del journal replay failed', { error: castError(e).message });
        }
      } while (again && !closed);
    })().finally(() => (running = undefined));
    return running;
  };
  let watcher: FSWatcher | undefined;
  try {
    mkdirSync(dir, { recursive: true });
    // Entries land by rename from a dot-prefixed temp file (common/del-journal.ts).
    watcher = watch(dir, (_event, name) => { if (!closed && (!name || !String(name).startsWith('.'))) void run(); });
    watcher.on('error', (e) => log.warn('del journal watch failed; replaying on the period only', { dir, error: e.message }));
    watcher.unref();
  } catch (e) {
    log.warn('cannot watch the del journal; replaying on the period only', { dir, error: castError(e).message });
  }
  const timer = setInterval(() => { if (!closed) void run(); }, o.periodMs);
  timer.unref();
  const first = run().then(() => log.info('del journal watched', { dir, onChange: watcher !== undefined, periodMs: o.periodMs }));
  return {
    first,
    kick: (why) => { if (!closed) { log.debug('del journal replay asked', { why }); void run(); } },
    close: () => {
      closed = true;
      clearInterval(timer);
      watcher?.close();
    },
  };
}
