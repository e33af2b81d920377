/**
 * The relay fuzz at scale: `node dist/bench/cni-fuzz.js [cases] [seed]`
 * (default 100,000 cases, seed from the clock), ASan+UBSan build of
 * cni/relay against a live fake agent running the real CNI contract
 * (sim/cni-fuzz.ts). Prints progress, the exit-code histogram and any
 * failure with the seed and case index that reproduce it; exits 1 on any.
 * Needs root (a network namespace).
 */
import { fuzzRelay } from '../sim/cni-fuzz';

async function main(): Promise<void> {
  const cases = Number(process.argv[2] ?? 100_000);
  const seed = Number(process.argv[3] ?? Date.now() % 2 ** 31);
  const concurrency = Number(process.env.FUZZ_CONCURRENCY ?? 4);
  console.log(`cni relay fuzz: ${cases} cases, seed ${seed}, concurrency ${concurrency}`);
  const r = await fuzzRelay({ seed, cases, concurrency, onProgress: (n) => { if (n % 10_000 === 0) console.log(`  ${n} cases`); } });
  console.log(`done: ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.cases / (r.ms / 1000))}/s)`);
  console.log(`exit/code histogram: ${JSON.stringify(Object.fromEntries(Object.entries(r.exits).sort()))}`);
  console.log(`failures: ${r.failures.length}`);
  for (const f of r.failures) console.log(JSON.stringify(f));
  process.exitCode = r.failures.length > 0 ? 1 : 0;
}

void main();
