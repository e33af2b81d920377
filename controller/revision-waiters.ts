/**
 * Callers waiting for a watch-fed view to reach an etcd revision: after the
 * controller's own writes (caughtUp), and for reads that must see a
 * client's writes (caughtUpWithin, bounded; its waiter leaves when the wait
 * runs out, so a revision that never comes leaves nothing behind).
 */
export class RevisionWaiters {
  /** The newest revision seen; it never goes back. */
  revision = 0n;
  private readonly waiters: { rev: bigint; resolve: () => void }[] = [];

  caughtUp(rev: bigint): Promise<void> {
    if (this.revision >= rev) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ rev, resolve }));
  }

  /** true once `rev` is seen, false after `ms`. */
  caughtUpWithin(rev: bigint, ms: number): Promise<boolean> {
    if (this.revision >= rev) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = { rev, resolve: () => { clearTimeout(timer); resolve(true); } };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, ms);
      this.waiters.push(w);
    });
  }

  /** The view has applied everything up to rev. */
  seen(rev: bigint): void {
    if (rev > this.revision) this.revision = rev;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].rev <= this.revision) { this.waiters[i].resolve(); this.waiters.splice(i, 1); }
    }
  }

  get pending(): number {
    return this.waiters.length;
  }
}
