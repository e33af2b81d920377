import test from 'ava';
import fc from 'fast-check';
import { isBerthError } from '../common/errors';
import { identityFor, tryIdentityFor, MAX_IDENTITY_LENGTH } from './identity';

const H = 'node-a';

test('precedence: explicit > k8s namespace+pod > host-scoped name > container', (t) => {
  const all = { BERTH_IDENTITY: 'db/primary', K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'db-0' };
  t.deepEqual(identityFor(all, 'c1', H), { identity: 'db/primary', source: 'explicit' });
  t.deepEqual(identityFor({ K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'db-0' }, 'c1', H), { identity: 'k8s/web/db-0', source: 'k8s' });
  t.deepEqual(identityFor({ K8S_POD_NAME: 'db-0' }, 'c1', H), { identity: 'host/node-a/db-0', source: 'host' });
  t.deepEqual(identityFor({ K8S_POD_NAMESPACE: 'web' }, 'c1', H), { identity: 'container/c1', source: 'container' });
  t.deepEqual(identityFor({}, 'c1', H), { identity: 'container/c1', source: 'container' });
});

test('empty values count as absent', (t) => {
  t.is(identityFor({ BERTH_IDENTITY: '', K8S_POD_NAME: 'p', K8S_POD_NAMESPACE: '' }, 'c1', H).identity, 'host/node-a/p');
  t.is(identityFor({ K8S_POD_NAME: '' }, 'c1', H).identity, 'container/c1');
});

test('podman (K8S_POD_NAME without a namespace): same name on one host is one identity, on two hosts two', (t) => {
  const podman = { K8S_POD_NAME: 'web', K8S_POD_INFRA_CONTAINER_ID: 'x', IgnoreUnknown: '1' };
  t.is(identityFor(podman, 'c1', 'node-a').identity, identityFor(podman, 'c2-restarted', 'node-a').identity, 'a restart keeps its address');
  t.not(identityFor(podman, 'c1', 'node-a').identity, identityFor(podman, 'c1', 'node-b').identity, 'two hosts never collide');
  t.not(identityFor(podman, 'c1', 'node-a').identity, identityFor({ K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web' }, 'c1', 'node-a').identity);
});

test('bad values are InvalidEnv (4); tryIdentityFor swallows them', (t) => {
  for (const args of <Record<string, string>[]>[
    { BERTH_IDENTITY: 'has space' },
    { BERTH_IDENTITY: 'x'.repeat(MAX_IDENTITY_LENGTH + 1) },
    { K8S_POD_NAME: 'a/b' },
    { K8S_POD_NAME: 'p', K8S_POD_NAMESPACE: 'n/s' },
  ]) {
    const e = t.throws(() => identityFor(args, 'c1', H));
    t.true(isBerthError(e) && e.kind === 'InvalidEnv' && e.cniCode === 4, JSON.stringify(args));
    t.is(tryIdentityFor(args, 'c1', H), undefined);
  }
  t.throws(() => identityFor({}, '', H));
});

const seg = fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,30}$/);

test('property: deterministic, ignores unrelated args, never exceeds the controller limit', (t) => {
  fc.assert(fc.property(seg, fc.option(seg, { nil: undefined }), seg, fc.dictionary(fc.constantFrom('IgnoreUnknown', 'K8S_POD_UID', 'IP'), fc.string()), (pod, ns, cid, noise) => {
    const args: Record<string, string> = { ...noise, K8S_POD_NAME: pod };
    if (ns !== undefined) args.K8S_POD_NAMESPACE = ns;
    const a = identityFor(args, cid, H);
    const b = identityFor({ K8S_POD_NAME: pod, ...(ns !== undefined ? { K8S_POD_NAMESPACE: ns } : {}) }, `${cid}-other`, H);
    return a.identity === b.identity && a.identity.length <= MAX_IDENTITY_LENGTH && a.source === (ns !== undefined ? 'k8s' : 'host');
  }));
  t.pass();
});

test('property: distinct (namespace, pod) pairs and host-scoped names never share an identity', (t) => {
  fc.assert(fc.property(seg, seg, seg, seg, seg, seg, (ns1, p1, ns2, p2, h1, h2) => {
    const a = identityFor({ K8S_POD_NAMESPACE: ns1, K8S_POD_NAME: p1 }, 'c', h1).identity;
    const b = identityFor({ K8S_POD_NAMESPACE: ns2, K8S_POD_NAME: p2 }, 'c', h2).identity;
    const bare1 = identityFor({ K8S_POD_NAME: p1 }, 'c', h1).identity;
    const bare2 = identityFor({ K8S_POD_NAME: p2 }, 'c', h2).identity;
    return (a === b) === (ns1 === ns2 && p1 === p2) && a !== bare2 && b !== bare1 && (bare1 === bare2) === (p1 === p2 && h1 === h2);
  }));
  t.pass();
});

test('property: container identities are injective in the container id', (t) => {
  fc.assert(fc.property(seg, seg, (c1, c2) => (identityFor({}, c1, H).identity === identityFor({}, c2, H).identity) === (c1 === c2)));
  t.pass();
});
