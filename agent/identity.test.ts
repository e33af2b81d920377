import test from 'ava';
import fc from 'fast-check';
import { isBerthError } from '../common/errors';
import { identityFor, tryIdentityFor, MAX_IDENTITY_LENGTH } from './identity';

test('precedence: explicit > k8s namespace+pod > k8s pod > container', (t) => {
  const all = { BERTH_IDENTITY: 'db/primary', K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'db-0' };
  t.deepEqual(identityFor(all, 'c1'), { identity: 'db/primary', source: 'explicit' });
  t.deepEqual(identityFor({ K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'db-0' }, 'c1'), { identity: 'k8s/web/db-0', source: 'k8s' });
  t.deepEqual(identityFor({ K8S_POD_NAME: 'db-0' }, 'c1'), { identity: 'k8s/db-0', source: 'k8s' });
  t.deepEqual(identityFor({ K8S_POD_NAMESPACE: 'web' }, 'c1'), { identity: 'container/c1', source: 'container' });
  t.deepEqual(identityFor({}, 'c1'), { identity: 'container/c1', source: 'container' });
});

test('empty values count as absent', (t) => {
  t.is(identityFor({ BERTH_IDENTITY: '', K8S_POD_NAME: 'p', K8S_POD_NAMESPACE: '' }, 'c1').identity, 'k8s/p');
  t.is(identityFor({ K8S_POD_NAME: '' }, 'c1').identity, 'container/c1');
});

test('bad values are InvalidEnv (4); tryIdentityFor swallows them', (t) => {
  for (const args of <Record<string, string>[]>[
    { BERTH_IDENTITY: 'has space' },
    { BERTH_IDENTITY: 'x'.repeat(MAX_IDENTITY_LENGTH + 1) },
    { K8S_POD_NAME: 'a/b' },
    { K8S_POD_NAME: 'p', K8S_POD_NAMESPACE: 'n/s' },
  ]) {
    const e = t.throws(() => identityFor(args, 'c1'));
    t.true(isBerthError(e) && e.kind === 'InvalidEnv' && e.cniCode === 4, JSON.stringify(args));
    t.is(tryIdentityFor(args, 'c1'), undefined);
  }
  t.throws(() => identityFor({}, ''));
});

const seg = fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,30}$/);

test('property: deterministic, ignores unrelated args, never exceeds the controller limit', (t) => {
  fc.assert(fc.property(seg, fc.option(seg, { nil: undefined }), seg, fc.dictionary(fc.constantFrom('IgnoreUnknown', 'K8S_POD_UID', 'IP'), fc.string()), (pod, ns, cid, noise) => {
    const args: Record<string, string> = { ...noise, K8S_POD_NAME: pod };
    if (ns !== undefined) args.K8S_POD_NAMESPACE = ns;
    const a = identityFor(args, cid);
    const b = identityFor({ K8S_POD_NAME: pod, ...(ns !== undefined ? { K8S_POD_NAMESPACE: ns } : {}) }, `${cid}-other`);
    return a.identity === b.identity && a.identity.length <= MAX_IDENTITY_LENGTH && a.source === 'k8s';
  }));
  t.pass();
});

test('property: distinct (namespace, pod) pairs and bare pods never share an identity', (t) => {
  fc.assert(fc.property(seg, seg, seg, seg, (ns1, p1, ns2, p2) => {
    const a = identityFor({ K8S_POD_NAMESPACE: ns1, K8S_POD_NAME: p1 }, 'c').identity;
    const b = identityFor({ K8S_POD_NAMESPACE: ns2, K8S_POD_NAME: p2 }, 'c').identity;
    const bare = identityFor({ K8S_POD_NAME: p2 }, 'c').identity;
    return (a === b) === (ns1 === ns2 && p1 === p2) && a !== bare;
  }));
  t.pass();
});

test('property: container identities are injective in the container id', (t) => {
  fc.assert(fc.property(seg, seg, (c1, c2) => (identityFor({}, c1).identity === identityFor({}, c2).identity) === (c1 === c2)));
  t.pass();
});
