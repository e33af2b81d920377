/**
 * What scraping costs a bench: the same measurement run alternately with
 * and without a scraper hitting every given /metrics endpoint every
 * `everyMs`, in one process, against the same daemons. Runs alternate in
 * ABBA order (off, on, on, off, ...) so slow drift (a growing etcd, a
 * warming JIT) falls on both sides equally; the reported ratio is the
 * median of per-pair ratios (scraped / unscraped time, > 1 = slower).
 *
 * Wall time on a shared 2-core machine is noisy (other work steals the
 * cores), so the daemons' own user CPU time per run is measured too, from
 * /proc/<pid>/stat: what serving the scrapes costs the daemon, whatever
 * else runs; cpuRatio is again the median of per-pair ratios. Last, the CPU one
 * scrape costs, from back-to-back scrapes, as a share of the daemon's CPU
 * under the measured load: the figure that does not depend on the noise.
 */
import { readFileSync } from 'node:fs';
import { get } from '../sim/prom';

export interface ScrapeCost {
  /** Seconds per run, unscraped and scraped, in run order. */
  off: number[];
  on: number[];
  /** Median over pairs of on/off. */
  ratio: number;
  /** User CPU seconds of the given daemons per run, and the median over pairs of on/off. */
  cpuOff: number[];
  cpuOn: number[];
  cpuRatio: number;
  /** CPU milliseconds the daemons spend per scrape round, from 100 back-to-back rounds after the runs. */
  cpuMsPerScrape: number;
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

/**
 * User CPU seconds a process has used: field 14 of /proc/<pid>/stat, in
 * clock ticks of 1/100 s. User time only: an agent's system time is mostly
 * the kernel creating veths and namespaces, which other work on the machine
 * (RTNL contention) slows far more than anything a scrape does.
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) / 100;
}

/** measure(run) does the work and returns its duration in seconds; cpuPids are the daemons serving it. */
export async function scrapeCost(urls: string[], pairs: number, everyMs: number, cpuPids: number[], measure: (run: number) => Promise<number>): Promise<ScrapeCost> {
  const out: ScrapeCost = { off: [], on: [], ratio: NaN, cpuOff: [], cpuOn: [], cpuRatio: NaN, cpuMsPerScrape: NaN, scrapes: 0, everyMs };
  const cpu = () => cpuPids.reduce((a, pid) => a + cpuSeconds(pid), 0);
  let run = 0;
  // One run unmeasured first: the JIT and etcd's first compactions still move the first runs by 20-50 %.
  await measure(run++);
  for (let p = 0; p < pairs; p++) {
    for (const scraped of p % 2 === 0 ? [false, true] : [true, false]) {
      const scraper = scraped ? startScraper(urls, everyMs) : undefined;
      const cpu0 = cpu();
      try {
        (scraped ? out.on : out.off).push(await measure(run++));
      } finally {
        if (scraper) out.scrapes += await scraper.stop();
      }
      (scraped ? out.cpuOn : out.cpuOff).push(cpu() - cpu0);
    }
  }
  out.ratio = medianRatio(out.on, out.off);
  out.cpuRatio = medianRatio(out.cpuOn, out.cpuOff);
  const rounds = 100;
  const c0 = cpu();
  for (let i = 0; i < rounds; i++) await Promise.all(urls.map((u) => get(u, '/metrics')));
  out.cpuMsPerScrape = ((cpu() - c0) / rounds) * 1000;
  return out;
}

/** Median over pairs of on[i] / off[i]. */
function medianRatio(on: number[], off: number[]): number {
  const ratios = on.map((x, i) => x / off[i]).sort((a, b) => a - b);
  const mid = ratios.length >> 1;
  return ratios.length % 2 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2;
}

export function scrapeCostLine(what: string, c: ScrapeCost): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const signed = (r: number) => `${r >= 1 ? '+' : ''}${((r - 1) * 100).toFixed(1)}%`;
  return `  metrics cost, ${what}, ${c.on.length} pairs, ${c.scrapes} scrapes every ${c.everyMs} ms:\n`
    + `    wall time scraped/unscraped ${c.ratio.toFixed(3)} (median of pairs, ${signed(c.ratio)}; mean ${mean(c.off).toFixed(2)} s vs ${mean(c.on).toFixed(2)} s)  target <= 1.03: ${c.ratio <= 1.03 ? 'met' : 'MISSED'}\n`
    + `    daemon user CPU scraped/unscraped ${c.cpuRatio.toFixed(3)} (median of pairs, ${signed(c.cpuRatio)}; ${mean(c.cpuOff).toFixed(2)} s vs ${mean(c.cpuOn).toFixed(2)} s per run: ${c.cpuOff.map((x) => x.toFixed(2)).join(' ')} vs ${c.cpuOn.map((x) => x.toFixed(2)).join(' ')})  target <= 1.03: ${c.cpuRatio <= 1.03 ? 'met' : 'MISSED'}\n`
    + `    one scrape costs the daemon ${c.cpuMsPerScrape.toFixed(2)} ms CPU: at this load, ${(100 * c.cpuMsPerScrape / 1000 / (mean(c.cpuOff) / mean(c.off)) * (1000 / c.everyMs)).toFixed(2)}% of its CPU at one scrape per ${c.everyMs} ms, `
    + `${(100 * c.cpuMsPerScrape / 1000 / (mean(c.cpuOff) / mean(c.off)) / 15).toFixed(3)}% at one per 15 s`;
}
