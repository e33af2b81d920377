/**
 * What scraping costs a bench, measured inside one long run: a scraper
 * fetching every given /metrics endpoint every `everyMs` is switched on and
 * off in alternating slices of `sliceMs`, and the work's completions and the
 * daemons' user CPU are counted per slice. Load from elsewhere on a shared
 * machine changes over seconds to minutes, so it falls on both kinds of
 * slice alike; runs measured one after another (with, then without) moved
 * by ±25 % here for identical settings.
 *
 *   slowdown  = completions/s in unscraped slices / completions/s in scraped slices (> 1: slower)
 *   cpu ratio = daemon user CPU/s in scraped slices / in unscraped slices
 *
 * The first slice (warm-up) and the last, partial one are dropped. Last, the
 * CPU one scrape costs the daemons, from 100 back-to-back scrapes, as a share
 * of their CPU under the measured load: the figure noise does not move.
 */
import { readFileSync } from 'node:fs';
import { get } from '../sim/prom';

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

interface Slice { on: boolean; start: number; end: number; ops: number; cpu0: number; cpu1: number }

export interface ScrapeCost {
  slowdown: number;
  cpuRatio: number;
  opsPerSecOff: number;
  opsPerSecOn: number;
  slices: number;
  scrapes: number;
  cpuMsPerScrape: number;
  /** Daemon user CPU seconds per wall second, unscraped. */
  cpuLoadOff: number;
  everyMs: number;
  sliceMs: number;
}

/** work(done) runs the load and calls done() once per completed operation. */
export async function scrapeCost(
  o: { urls: string[]; everyMs: number; sliceMs: number; cpuPids: number[] },
  work: (done: () => void) => Promise<void>,
): Promise<ScrapeCost> {
  const cpu = () => o.cpuPids.reduce((a, pid) => a + cpuSeconds(pid), 0);
  const slices: Slice[] = [];
  const open = (on: boolean) => slices.push({ on, start: performance.now(), end: NaN, ops: 0, cpu0: cpu(), cpu1: NaN });
  const close = () => { const s = slices[slices.length - 1]; s.end = performance.now(); s.cpu1 = cpu(); };
  open(false);
  const flip = setInterval(() => { const on = !slices[slices.length - 1].on; close(); open(on); }, o.sliceMs);
  let finished = false;
  let scrapes = 0;
  const scraper = (async () => {
    while (!finished) {
      if (slices[slices.length - 1].on) {
        await Promise.all(o.urls.map(async (u) => {
          const r = await get(u, '/metrics');
          if (r.status !== 200) throw new Error(`scrape ${u}: ${r.status}`);
          scrapes++;
        }));
      }
      await new Promise((r) => setTimeout(r, o.everyMs));
    }
  })();
  try {
    await work(() => { slices[slices.length - 1].ops++; });
  } finally {
    clearInterval(flip);
    close();
    finished = true;
    await scraper;
  }
  const whole = slices.slice(1, -1);
  const rate = (on: boolean, f: (s: Slice) => number) => {
    const ss = whole.filter((s) => s.on === on);
    return ss.reduce((a, s) => a + f(s), 0) / (ss.reduce((a, s) => a + (s.end - s.start), 0) / 1000);
  };
  const opsOff = rate(false, (s) => s.ops), opsOn = rate(true, (s) => s.ops);
  const cpuOff = rate(false, (s) => s.cpu1 - s.cpu0), cpuOn = rate(true, (s) => s.cpu1 - s.cpu0);
  const rounds = 100;
  const c0 = cpu();
  for (let i = 0; i < rounds; i++) await Promise.all(o.urls.map((u) => get(u, '/metrics')));
  return {
    slowdown: opsOff / opsOn, cpuRatio: cpuOn / cpuOff, opsPerSecOff: opsOff, opsPerSecOn: opsOn, slices: whole.length, scrapes,
    cpuMsPerScrape: ((cpu() - c0) / rounds) * 1000, cpuLoadOff: cpuOff, everyMs: o.everyMs, sliceMs: o.sliceMs,
  };
}

export function scrapeCostLine(what: string, c: ScrapeCost): string {
  const signed = (r: number) => `${r >= 1 ? '+' : ''}${((r - 1) * 100).toFixed(1)}%`;
  const share = (perSec: number) => `${((100 * c.cpuMsPerScrape * perSec) / 1000 / c.cpuLoadOff).toFixed(2)}%`;
  return `  metrics cost, ${what}: scraper every ${c.everyMs} ms, on and off in ${c.sliceMs} ms slices (${c.slices} slices, ${c.scrapes} scrapes)\n`
    + `    slowdown (unscraped ops/s / scraped ops/s) ${c.slowdown.toFixed(3)} (${signed(c.slowdown)}; ${c.opsPerSecOff.toFixed(1)} vs ${c.opsPerSecOn.toFixed(1)} ops/s)  target <= 1.03: ${c.slowdown <= 1.03 ? 'met' : 'MISSED'}\n`
    + `    daemon user CPU/s scraped/unscraped ${c.cpuRatio.toFixed(3)} (${signed(c.cpuRatio)}; ${c.cpuLoadOff.toFixed(2)} CPU-s/s unscraped)\n`
    + `    one scrape round costs the daemons ${c.cpuMsPerScrape.toFixed(2)} ms CPU: ${share(1000 / c.everyMs)} of their CPU under this load at this rate, ${share(1 / 15)} at one per 15 s`;
}
