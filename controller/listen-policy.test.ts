/** Which listeners the controller accepts, and what it warns about. */
import test from 'ava';
import { isBerthError } from '../common/errors';
import { checkListeners } from './listen-policy';

const none = { token: false, tls: false, mtls: false, insecureListen: false };

test('loopback and unix listeners need no guard', (t) => {
  t.deepEqual(checkListeners(['127.0.0.1:7480', '[::1]:7480', 'localhost:0', 'unix:///run/berth/c.sock'], none), []);
});

test('a non-loopback listener with neither token nor mTLS is refused, unless --insecure-listen, then warned about', (t) => {
  for (const l of ['0.0.0.0:7480', '[::]:7480', '10.1.2.3:7480']) {
    const e = t.throws(() => checkListeners([l], none));
    t.true(isBerthError(e) && e.kind === 'InvalidConfig', l);
    t.regex((e as Error).message, /--insecure-listen/);
  }
  const w = checkListeners(['0.0.0.0:7480'], { ...none, insecureListen: true });
  t.is(w.length, 1);
  t.regex(w[0].msg, /no authentication/);
});

test('a token or mTLS guards a non-loopback listener; a token without TLS is warned about', (t) => {
  t.deepEqual(checkListeners(['0.0.0.0:7480'], { ...none, tls: true, mtls: true }), []);
  t.deepEqual(checkListeners(['0.0.0.0:7480'], { ...none, tls: true, token: true }), []);
  const w = checkListeners(['0.0.0.0:7480'], { ...none, token: true });
  t.is(w.length, 1);
  t.regex(w[0].msg, /clear text/);
  t.throws(() => checkListeners(['0.0.0.0:7480'], { ...none, tls: true }), { message: /refusing/ }, 'TLS alone authenticates nobody');
});

test('a malformed listen address is one InvalidConfig line', (t) => {
  const e = t.throws(() => checkListeners(['nonsense'], none));
  t.true(isBerthError(e) && e.kind === 'InvalidConfig');
});
