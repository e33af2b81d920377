/**
 * Counts CNI requests in progress, so the reconcile loop can let them finish
 * before a pass takes the JS thread and the kernel's RTNL (reconciler.ts
 * `yieldTo`). A pass only ever waits a bounded time for it: under a steady
 * stream of requests it still runs every `maxWaitMs`.
 */
export class Activity {
  private busy = 0;
  private idleWaiters: (() => void)[] = [];

  /** Runs fn counted as activity. */
  async during<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    try {
      return await fn();
    } finally {
      if (--this.busy === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  get active(): number {
    return this.busy;
  }

  /** Callers waiting in settle() (none left behind by a wait that ran out). */
  get waiting(): number {
    return this.idleWaiters.length;
  }

  /** Resolves once nothing is in progress, or after maxWaitMs, whichever comes first. */
  settle(maxWaitMs: number): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        const i = this.idleWaiters.indexOf(done);
        if (i >= 0) this.idleWaiters.splice(i, 1);
        resolve();
      };
      const timer = setTimeout(done, maxWaitMs);
      this.idleWaiters.push(done);
    });
  }
}
