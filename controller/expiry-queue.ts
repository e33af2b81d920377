/**
 * Pure: the expirer's time-ordered index of held leases, a binary min-heap
 * on the instant each hold lapses. The expirer feeds it every lease change
 * the watch-fed view sees and pops only what is due, so a pass at rest costs
 * O(1) and touches nothing in etcd (it used to read every lease each second).
 *
 * Entries are never updated in place: a changed lease is pushed again with
 * its new mod revision, and popDue() drops entries whose revision is no
 * longer the lease's current one (the caller supplies that check), so the
 * heap holds at most one live entry per lease plus stale ones that drain as
 * they come due. compact() rebuilds it from the live entries when stale ones
 * dominate.
 */
export interface Due { at: number; pool: string; ip: string; mod: string }

export class ExpiryQueue {
  private heap: Due[] = [];

  get size(): number { return this.heap.length; }

  clear(): void { this.heap = []; }

  push(d: Due): void {
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].at <= h[i].at) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  peek(): Due | undefined { return this.heap[0]; }

  /** Removes and returns every entry due at or before `now` for which `live` holds. */
  popDue(now: number, live: (d: Due) => boolean, max = Infinity): Due[] {
    const out: Due[] = [];
    while (this.heap.length > 0 && this.heap[0].at <= now && out.length < max) {
      const d = this.pop();
      if (live(d)) out.push(d);
    }
    return out;
  }

  /** Keeps only entries for which `live` holds. */
  compact(live: (d: Due) => boolean): void {
    const keep = this.heap.filter(live);
    this.heap = [];
    for (const d of keep) this.push(d);
  }

  private pop(): Due {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as Due;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && h[l].at < h[m].at) m = l;
        if (r < h.length && h[r].at < h[m].at) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}
