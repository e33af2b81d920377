import test from 'ava';
import { GRPCDeadlineExceededError, GRPCInvalidArgumentError, GRPCResourceExhastedError, GRPCUnavailableError, EtcdError } from 'etcd3';
import { isMemberDown, isRetryable, memberBreaker, retryWithin } from './etcd-faults';

const tooBig = () => new GRPCResourceExhastedError('8 RESOURCE_EXHAUSTED: Received message larger than max (39766980 vs 4194304)');
const down = () => new GRPCUnavailableError('14 UNAVAILABLE: No connection established');

test('classification: oversized and invalid requests are final; unreachable, deadline and leader loss are retried', (t) => {
  t.false(isRetryable(tooBig()));
  t.false(isRetryable(new GRPCInvalidArgumentError('3 INVALID_ARGUMENT: etcdserver: too many operations in txn request')));
  t.false(isMemberDown(tooBig()));
  t.true(isRetryable(down()));
  t.true(isMemberDown(down()));
  t.true(isRetryable(new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED: Deadline exceeded')));
  t.false(isMemberDown(new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED: Deadline exceeded')));
  t.true(isRetryable(new EtcdError('etcdserver: leader changed')));
  t.true(isRetryable(new EtcdError('etcdserver: request timed out')));
});

test('the breaker opens on consecutive member-down failures only, and closes after openMs', async (t) => {
  let now = 0;
  const b = memberBreaker({ threshold: 3, openMs: 1000, now: () => now });
  const fail = (e: Error) => b.execute(() => { throw e; });
  for (let i = 0; i < 10; i++) await t.throwsAsync(fail(tooBig()));
  t.is(b.state(), 'closed', 'ten oversized reads in a row do not open it');
  t.is(await b.execute(() => 'ok'), 'ok');
  for (let i = 0; i < 3; i++) await t.throwsAsync(fail(down()));
  t.is(b.state(), 'open');
  const blocked = await t.throwsAsync(b.execute(() => 'ok'));
  t.regex(String(blocked?.message), /circuit breaker is open/);
  now += 1000;
  t.is(await b.execute(() => 'ok'), 'ok');
  t.is(b.state(), 'closed');
});

test('retries retryable failures within the budget and never the final ones', async (t) => {
  let calls = 0;
  const r = retryWithin({ budgetMs: 2000, firstDelayMs: 1 });
  t.is(await r.execute(() => { if (++calls < 3) throw down(); return 'ok'; }), 'ok');
  t.is(calls, 3);
  calls = 0;
  await t.throwsAsync(r.execute(() => { calls++; throw tooBig(); }));
  t.is(calls, 1, 'an oversized read is not repeated');
  let now = 0;
  calls = 0;
  const short = retryWithin({ budgetMs: 100, firstDelayMs: 1, now: () => now });
  await t.throwsAsync(short.execute(() => { calls++; now += 60; throw down(); }));
  t.is(calls, 2, 'gives up when the budget is spent');
});
