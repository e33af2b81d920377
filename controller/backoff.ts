/**
 * Bounded exponential backoff with full jitter. The schedule is a plain value
 * (`schedule()`), so tests can assert it exactly; `next()` sleeps a random
 * fraction of the next step.
 */
export interface BackoffPolicy { baseMs: number; factor: number; maxMs: number }

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 4, factor: 2, maxMs: 250 };

export function schedule(policy: BackoffPolicy, steps: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < steps; i++) out.push(Math.min(policy.maxMs, policy.baseMs * policy.factor ** i));
  return out;
}

export class Backoff {
  private step = 0;
  constructor(private readonly policy: BackoffPolicy = DEFAULT_BACKOFF, private readonly random: () => number = Math.random) {}
  next(): Promise<void> {
    const cap = schedule(this.policy, this.step + 1)[this.step];
    this.step++;
    return new Promise((r) => setTimeout(r, Math.max(1, Math.round(cap * this.random()))));
  }
}
