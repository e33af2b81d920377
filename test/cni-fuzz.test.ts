/**
 * A few thousand generated cases of the relay fuzz (sim/cni-fuzz.ts) on the
 * ASan+UBSan build, in the suite: no crash, no sanitizer report, no hang,
 * and one CNI error object with exit 1 for every malformed input. The same
 * seed every run, so a failure reproduces; bench/cni-fuzz.ts runs 100,000+.
 */
import test from 'ava';
import { fuzzRelay } from '../sim/cni-fuzz';

test('2,000 generated requests: every answer is whole and coded, nothing crashes or hangs', async (t) => {
  const r = await fuzzRelay({ seed: 9009, cases: 2000, concurrency: 4, leakEvery: 100 });
  t.is(r.cases, 2000);
  t.deepEqual(r.failures, []);
  // The generator reaches the paths that matter: successes, the agent's answers and the relay's own.
  for (const k of ['0', '1/4', '1/6', '1/7', '1/11']) t.true((r.exits[k] ?? 0) > 0, `no case ended ${k}: ${JSON.stringify(r.exits)}`);
});
