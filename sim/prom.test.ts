/** The exposition parser the metrics tests rely on, against what prom-client really writes. */
import test from 'ava';
import fc from 'fast-check';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { metric, parseExposition } from './prom';

test('parses what prom-client writes, any label value, any finite value', async (t) => {
  await fc.assert(fc.asyncProperty(
    fc.uniqueArray(fc.tuple(fc.string({ maxLength: 12 }), fc.double({ noNaN: true, noDefaultInfinity: true })), { selector: ([l]) => l, maxLength: 8 }),
    async (series) => {
      const r = new Registry();
      const g = new Gauge({ name: 'x_gauge', help: 'a "help" with \\ and\nnewline', labelNames: ['l'], registers: [r] });
      for (const [l, v] of series) g.set({ l }, v);
      const e = parseExposition(await r.metrics());
      t.is(e.types.get('x_gauge'), 'gauge');
      t.is(e.help.get('x_gauge'), 'a "help" with \\ and\nnewline');
      t.is(e.samples.length, series.length);
      for (const [l, v] of series) t.is(metric(e, 'x_gauge', { l }), v + 0); // -0 is written as 0
    },
  ), { numRuns: 200 });
});

test('histograms and counters: buckets, +Inf, sum and count', async (t) => {
  const r = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['verb'], buckets: [0.1, 1], registers: [r] });
  const c = new Counter({ name: 'x_total', help: 'c', registers: [r] });
  h.observe({ verb: 'ADD' }, 0.05);
  h.observe({ verb: 'ADD' }, 5);
  c.inc(3);
  const e = parseExposition(await r.metrics());
  t.is(e.types.get('x_seconds'), 'histogram');
  t.is(metric(e, 'x_seconds_bucket', { verb: 'ADD', le: '0.1' }), 1);
  t.is(metric(e, 'x_seconds_bucket', { verb: 'ADD', le: '+Inf' }), 2);
  t.is(metric(e, 'x_seconds_count', { verb: 'ADD' }), 2);
  t.is(metric(e, 'x_seconds_sum', { verb: 'ADD' }), 5.05);
  t.is(metric(e, 'x_total'), 3);
  t.is(metric(e, 'x_missing'), undefined);
});

test('Inf and NaN in any case, as Prometheus reads them (prom-client writes "Nan")', (t) => {
  const e = parseExposition('a +Inf\nb -Inf\nc Nan\nd NaN\ne inf\n');
  t.deepEqual(e.samples.map((s) => s.value), [Infinity, -Infinity, NaN, NaN, Infinity]);
});

test('refuses malformed expositions', (t) => {
  for (const bad of ['x{l="v} 1', 'x{l=v} 1', 'x 1 2 3', 'x one', 'x nana', '1x 1', 'x{l="\\q"} 1', '# TYPE x bogus']) {
    t.throws(() => parseExposition(bad), undefined, bad);
  }
});
