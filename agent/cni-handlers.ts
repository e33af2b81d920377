/**
 * What the agent does for each CNI verb; cni/plugin.ts, run by the agent on
 * the relay's raw request (agent/cni-relay.ts), has already validated it. One file per verb in
 * agent/cni/: add.ts, del.ts, check.ts, gc.ts, status.ts.
 *
 * ADD, DEL and CHECK of one attachment (pool, containerId, ifName) run one
 * at a time; different attachments run concurrently. Errors become
 * AgentResponse bodies in exactly one place, here.
 */
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import type { DelJournalEntry } from '../common/del-journal';
import { BerthError, castError } from '../common/errors';
import type { CniDeps, CniHandler } from './cni-api';
import { add } from './cni/add';
import { check } from './cni/check';
import { del } from './cni/del';
import { gc } from './cni/gc';
import { stillPending } from './cni/journal';
import { attachmentKey, KeyedMutex, type Ctx } from './cni/shared';
import { status } from './cni/status';
import { ReleasedAttachments } from './cni/local-del';

/** Replays one journalled DEL unless an ADD superseded it; see agent/journal-replay.ts. */
export type ReplayDel = (dir: string, entry: DelJournalEntry) => Promise<AgentResponse | 'superseded'>;
const replayers = new WeakMap<CniHandler, ReplayDel>();

/** The handler's journal-aware DEL, when it has one (handlers from createCniHandler do). */
export function replayerOf(handler: CniHandler): ReplayDel | undefined {
  return replayers.get(handler);
}

function failure(e: unknown, deps: CniDeps, req: AgentRequest): AgentResponse {
  const err = castError(e);
  const fields = { verb: req.verb, containerId: req.containerId || undefined, kind: err.kind, details: err.details };
  if (err.kind === 'Internal') deps.log.error(err.stack ?? err.message, fields);
  else deps.log.warn(err.message, fields);
  return { ok: false, error: err.toBody() };
}

export function createCniHandler(deps: CniDeps): CniHandler {
  const ctx: Ctx = { deps, locks: new KeyedMutex(), released: new ReleasedAttachments() };

  const run = async (req: AgentRequest): Promise<AgentResponse> => {
    switch (req.verb) {
      case 'ADD':
        return { ok: true, result: await add(ctx, req) };
      case 'DEL':
        await del(ctx, req);
        return { ok: true };
      case 'CHECK':
        await check(ctx, req);
        return { ok: true };
      case 'GC':
        await gc(ctx, req);
        return { ok: true };
      case 'STATUS':
        await status(ctx, req);
        return { ok: true };
      default:
        throw new BerthError('InvalidRequest', `verb ${JSON.stringify((req as { verb?: unknown }).verb)}`, 'unknown verb');
    }
  };

  const perAttachment = (req: AgentRequest) => req.verb === 'ADD' || req.verb === 'DEL' || req.verb === 'CHECK';

  const handler: CniHandler = async (req) => {
    // The handlers open req.netns; with a namespace the relay passed, that is its handle.
    const { nsHandle, ...plain } = req;
    const work: AgentRequest = nsHandle ? { ...plain, netns: nsHandle } : plain;
    try {
      const resp = await (perAttachment(work) ? ctx.locks.run(attachmentKey(work), () => run(work)) : run(work));
      // The runtime's name for the sandbox, not the agent's handle, goes back in the result.
      if (nsHandle && resp.ok) for (const i of resp.result?.interfaces ?? []) if (i.sandbox === nsHandle) i.sandbox = req.netns;
      return resp;
    } catch (e) {
      return failure(e, deps, req);
    }
  };

  replayers.set(handler, async (dir, entry) => {
    const req = entry.request;
    try {
      return await ctx.locks.run(attachmentKey(req), async () => {
        if (!(await stillPending(dir, entry))) return 'superseded' as const;
        await del(ctx, req, { replay: true });
        return { ok: true } as const;
      });
    } catch (e) {
      return failure(e, deps, req);
    }
  });
  return handler;
}
