/**
 * How Berth's etcd client reacts to failed calls: which errors are worth a
 * retry, and which say the etcd member itself is gone.
 *
 * etcd3 1.1.2's defaults treat every "recoverable" gRPC status alike: the
 * call is retried three times and each failure counts toward a per-host
 * circuit breaker (3 in a row open it for 5 s). RESOURCE_EXHAUSTED is among
 * them, so ONE oversized read (a message above the receive limit) retried
 * three times opened the breaker and failed every bind and release for 5 s.
 * A deterministic error is not a sick server. Here:
 *
 *  - the breaker counts only "member unreachable" errors (UNAVAILABLE,
 *    connection failures), so a bad request never takes the client off etcd;
 *  - retries cover what a retry can fix: unreachable member, an attempt's
 *    deadline, and etcd's own "leader changed / no leader / timed out"
 *    answers, within one overall budget, with short backoff.
 *
 * Retrying a timed-out write is safe for Berth: every transaction it sends is
 * guarded by compares on the revisions it read (or only deletes), so a
 * retry of one that did commit fails its compare and the caller re-reads.
 */
import type { IOptions } from 'etcd3';

/** cockatiel's policy type, as etcd3's options name it (cockatiel is etcd3's dependency, not ours). */
export type EtcdPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

type Err = { name?: string; message?: string; constructor?: { name?: string } } | null | undefined;

function ctorName(e: Err): string {
  const c = e?.constructor?.name ?? '';
  return c && c !== 'Error' && c !== 'Object' ? c : e?.name ?? '';
}

/** The member can't be reached at all: the only errors the breaker counts. */
export function isMemberDown(e: unknown): boolean {
  const err = e as Err;
  const name = ctorName(err);
  if (name === 'GRPCUnavailableError' || name === 'GRPCConnectFailedError') return true;
  return /ECONNREFUSED|ECONNRESET|No connection established|failed to connect/i.test(err?.message ?? '');
}

/** etcd's own "try again" answers around a leader election. */
const LEADER_LOSS = /etcdserver: (leader changed|no leader|request timed out|too many requests)/;

/** Errors a retry of the same call can fix. Never oversized messages or bad requests. */
export function isRetryable(e: unknown): boolean {
  const err = e as Err;
  const name = ctorName(err);
  const message = err?.message ?? '';
  if (name === 'GRPCResourceExhastedError' || /RESOURCE_EXHAUSTED|larger than max/.test(message)) return false;
  if (isMemberDown(e)) return true;
  if (name === 'GRPCDeadlineExceededError' || /DEADLINE_EXCEEDED|Deadline exceeded/i.test(message)) return true;
  return LEADER_LOSS.test(message);
}

/** Thrown instead of calling an etcd member the breaker has given up on for now. */
export class BrokenCircuitError extends Error {
  readonly isBrokenCircuitError = true;
  constructor() {
    super('Execution prevented because the circuit breaker is open');
    this.name = 'BrokenCircuitError';
  }
}

type Exec = <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal) => Promise<T>;
const ctxOf = (signal?: AbortSignal) => ({ signal: signal ?? new AbortController().signal });
/** etcd3 only ever calls execute() on its policies. */
const asPolicy = (execute: Exec): EtcdPolicy => ({ execute } as unknown as EtcdPolicy);

/**
 * Per-member breaker: `threshold` member-down failures in a row open it for
 * `openMs`; then calls go through again and one success closes it.
 */
export function memberBreaker(o: { threshold: number; openMs: number; now?: () => number }): EtcdPolicy & { readonly state: () => 'closed' | 'open' } {
  const now = o.now ?? Date.now;
  let failures = 0;
  let openUntil = 0;
  const execute: Exec = async (fn, signal) => {
    if (now() < openUntil) throw new BrokenCircuitError();
    try {
      const r = await fn(ctxOf(signal));
      failures = 0;
      return r;
    } catch (e) {
      if (isMemberDown(e)) {
        if (++failures >= o.threshold) { openUntil = now() + o.openMs; failures = 0; }
      }
      throw e;
    }
  };
  return Object.assign(asPolicy(execute), { state: () => (now() < openUntil ? 'open' as const : 'closed' as const) });
}

/** Retries retryable failures with doubling backoff while the budget lasts. */
export function retryWithin(o: { budgetMs: number; firstDelayMs?: number; maxDelayMs?: number; now?: () => number }): EtcdPolicy {
  const now = o.now ?? Date.now;
  const execute: Exec = async (fn, signal) => {
    const deadline = now() + o.budgetMs;
    let wait = o.firstDelayMs ?? 25;
    for (;;) {
      try {
        return await fn(ctxOf(signal));
      } catch (e) {
        if (!isRetryable(e) || now() + wait >= deadline) throw e;
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, o.maxDelayMs ?? 400);
      }
    }
  };
  return asPolicy(execute);
}
