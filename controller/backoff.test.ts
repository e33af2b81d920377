import test from 'ava';
import { DEFAULT_BACKOFF, schedule } from './backoff';

test('the retry schedule doubles and is capped', (t) => {
  t.deepEqual(schedule(DEFAULT_BACKOFF, 8), [4, 8, 16, 32, 64, 128, 250, 250]);
});
