/**
 * What scraping costs a bench: the same measurement run alternately with
 * and without a scraper hitting every given /metrics endpoint every
 * `everyMs`, in one process, against the same daemons. Runs alternate in
 * ABBA order (off, on, on, off, ...) so slow drift (a growing etcd, a
 * warming JIT) falls on both sides equally; the reported ratio is the
 * median of per-pair ratios (scraped / unscraped time, > 1 = slower).
 */
import { get } from '../sim/prom';

export interface ScrapeCost {
  /** Seconds per run, unscraped and scraped, in run order. */
  off: number[];
  on: number[];
  /** Median over pairs of on/off. */
  ratio: number;
  scrapes: number;
  everyMs: number;
}

function startScraper(urls: string[], everyMs: number): { stop(): Promise<number> } {
  let scrapes = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      await Promise.all(urls.map(async (u) => {
        const r = await get(u, '/metrics');
        if (r.status !== 200) throw new Error(`scrape ${u}: ${r.status}`);
        scrapes++;
      }));
      await new Promise((r) => setTimeout(r, Math.max(0, everyMs - (performance.now() - t0))));
    }
  })();
  return { stop: async () => { stopped = true; await loop; return scrapes; } };
}

/** measure(run) does the work and returns its duration in seconds. */
export async function scrapeCost(urls: string[], pairs: number, everyMs: number, measure: (run: number) => Promise<number>): Promise<ScrapeCost> {
  const out: ScrapeCost = { off: [], on: [], ratio: NaN, scrapes: 0, everyMs };
  let run = 0;
  for (let p = 0; p < pairs; p++) {
    for (const scraped of p % 2 === 0 ? [false, true] : [true, false]) {
      const scraper = scraped ? startScraper(urls, everyMs) : undefined;
      try {
        (scraped ? out.on : out.off).push(await measure(run++));
      } finally {
        if (scraper) out.scrapes += await scraper.stop();
      }
    }
  }
  const ratios = out.on.map((s, i) => s / out.off[i]).sort((a, b) => a - b);
  const mid = ratios.length >> 1;
  out.ratio = ratios.length % 2 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2;
  return out;
}

export function scrapeCostLine(what: string, c: ScrapeCost): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const pct = (c.ratio - 1) * 100;
  return `  metrics cost, ${what}: scraped/unscraped time ${c.ratio.toFixed(3)} (median of ${c.on.length} pairs; ${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%, `
    + `mean ${mean(c.off).toFixed(2)} s unscraped vs ${mean(c.on).toFixed(2)} s scraped, ${c.scrapes} scrapes every ${c.everyMs} ms; target <= 1.03: ${c.ratio <= 1.03 ? 'met' : 'MISSED'})`;
}
