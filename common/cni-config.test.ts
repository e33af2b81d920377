import test from 'ava';
import fc from 'fast-check';
import { DEFAULT_AGENT_SOCKET } from './agent-protocol';
import { DEFAULT_JOURNAL_DIR, annotatedIp, decodeConf, formatCniArgs, parseCniArgs, parseNetConf, parsePrevResult } from './cni-config';
import { isBerthError, type ErrorKind } from './errors';

const base = { cniVersion: '1.1.0', name: 'berth-net', type: 'berth', pool: 'default' };

function kindOf(fn: () => unknown): ErrorKind | undefined {
  try {
    fn();
  } catch (e) {
    return isBerthError(e) ? e.kind : undefined;
  }
  return undefined;
}

test('defaults', (t) => {
  const c = parseNetConf({ ...base });
  t.is(c.agentSocket, DEFAULT_AGENT_SOCKET);
  t.is(c.journalDir, DEFAULT_JOURNAL_DIR);
  t.is(c.logLevel, 'warn');
  t.is(c.mtu, undefined);
  t.is(c.ips, undefined);
});

test('decodeConf: malformed JSON and non-objects are Decode (6)', (t) => {
  for (const s of ['{', '', '[]', '"x"', 'null', '42']) t.is(kindOf(() => decodeConf(s)), 'Decode', s);
  t.deepEqual(decodeConf('{"a":1}'), { a: 1 });
});

test('config error table', (t) => {
  const cases: [Record<string, unknown>, ErrorKind][] = [
    [{ ...base, cniVersion: '0.2.0' }, 'IncompatibleVersion'],
    [{ ...base, cniVersion: '2.0.0' }, 'IncompatibleVersion'],
    [{ ...base, cniVersion: undefined }, 'IncompatibleVersion'],
    [{ ...base, cniVersion: 1 }, 'Decode'],
    [{ ...base, name: undefined }, 'InvalidConfig'],
    [{ ...base, name: 'has space' }, 'InvalidConfig'],
    [{ ...base, type: 'bridge' }, 'InvalidConfig'],
    [{ ...base, pool: undefined }, 'InvalidConfig'],
    [{ ...base, pool: 7 }, 'InvalidConfig'],
    [{ ...base, ipam: { type: 'host-local' } }, 'UnsupportedField'],
    [{ ...base, agentSockt: '/x' }, 'UnsupportedField'],
    [{ ...base, agentSocket: 'relative.sock' }, 'InvalidConfig'],
    [{ ...base, journalDir: 5 }, 'InvalidConfig'],
    [{ ...base, mtu: 100 }, 'InvalidConfig'],
    [{ ...base, mtu: 1450.5 }, 'InvalidConfig'],
    [{ ...base, logLevel: 'loud' }, 'InvalidConfig'],
    [{ ...base, runtimeConfig: { ips: ['nope'] } }, 'InvalidConfig'],
    [{ ...base, runtimeConfig: { mac: 'zz' } }, 'InvalidConfig'],
    [{ ...base, runtimeConfig: [] }, 'InvalidConfig'],
    [{ ...base, capabilities: { ips: 'yes' } }, 'InvalidConfig'],
    [{ ...base, dns: { nameservers: 'x' } }, 'InvalidConfig'],
    [{ ...base, 'cni.dev/valid-attachments': [{ containerID: 'a' }] }, 'InvalidConfig'],
  ];
  for (const [raw, kind] of cases) {
    for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
    t.is(kindOf(() => parseNetConf(raw)), kind, JSON.stringify(raw));
  }
});

test('unsupported field: message names the key and the value (SPEC.md error code 2)', (t) => {
  const e = t.throws(() => parseNetConf({ ...base, ipam: { type: 'host-local' } }));
  t.true(isBerthError(e) && e.cniCode === 2);
  t.regex(e!.message, /ipam/);
  t.regex(e!.message, /host-local/);
});

test('reserved keys are accepted: args, runtimeConfig, capabilities, prevResult, cni.dev/*', (t) => {
  const c = parseNetConf({
    ...base,
    mtu: 1450,
    args: { cni: { ips: ['10.0.0.9'] }, labels: { anything: true } },
    runtimeConfig: { ips: ['198.18.0.7/16'], mac: '02-42-AC-11-00-02', portMappings: [] },
    capabilities: { ips: true, mac: true },
    prevResult: { ips: [] },
    'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }],
    'cni.dev/something-else': 1,
  });
  t.deepEqual(c.ips, ['198.18.0.7']);
  t.is(c.mac, '02:42:ac:11:00:02');
  t.is(c.mtu, 1450);
  t.deepEqual(c.validAttachments, [{ containerId: 'c1', ifName: 'eth0' }]);
  t.deepEqual(parsePrevResult(c), { ips: [] });
});

test('args.cni.ips is used when runtimeConfig has none; legacy cni.dev/attachments is read', (t) => {
  const c = parseNetConf({ ...base, args: { cni: { ips: ['10.0.0.9'] } }, 'cni.dev/attachments': [] });
  t.deepEqual(c.ips, ['10.0.0.9']);
  t.deepEqual(c.validAttachments, []);
});

test('parseCniArgs', (t) => {
  t.deepEqual(parseCniArgs(undefined), {});
  t.deepEqual(parseCniArgs(''), {});
  t.deepEqual(parseCniArgs('K8S_POD_NAME=web-0'), { K8S_POD_NAME: 'web-0' });
  t.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=bar;'), {
    IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'ns', K8S_POD_NAME: 'p', FOO: 'bar',
  });
  t.deepEqual(parseCniArgs('IgnoreUnknown=true;X='), { IgnoreUnknown: 'true', X: '' });
  for (const bad of ['FOO=bar', 'IgnoreUnknown=0;FOO=bar', 'K8S_POD_NAME', 'a=b=c', '=x', 'IgnoreUnknown=maybe', 'IP=1.2.3', 'MAC=xx']) {
    const e = t.throws(() => parseCniArgs(bad), undefined, bad);
    t.true(isBerthError(e) && e.kind === 'InvalidEnv' && e.message.includes('CNI_ARGS'), bad);
  }
});

test('property: CNI_ARGS format/parse round trip', (t) => {
  const key = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/);
  const val = fc.stringMatching(/^[A-Za-z0-9_.\-/:]{0,20}$/);
  fc.assert(fc.property(fc.dictionary(key, val), (d) => {
    const args = { IgnoreUnknown: '1', ...d };
    if (!['1', 'true'].includes(args.IgnoreUnknown.toLowerCase())) args.IgnoreUnknown = '1';
    delete (args as Record<string, string>).IP;
    delete (args as Record<string, string>).MAC;
    t.deepEqual(parseCniArgs(formatCniArgs(args)), args);
  }));
  t.pass();
});

test('the berth.io/ip pod annotation is taken from runtimeConfig unchecked; annotatedIp checks it', (t) => {
  const base = { cniVersion: '1.0.0', name: 'n', type: 'berth', pool: 'default' };
  const ann = (a: unknown) => parseNetConf({ ...base, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': a } });
  t.is(ann({ 'berth.io/ip': '198.18.0.9' }).annotatedIp, '198.18.0.9');
  t.is(ann({ 'berth.io/ip': 'junk' }).annotatedIp, 'junk', 'not refused here: a DEL must not fail on it');
  t.is(ann({ other: '1' }).annotatedIp, undefined);
  t.is(ann('not an object').annotatedIp, undefined);
  t.is(ann(JSON.parse('{"__proto__": {"berth.io/ip": "198.18.0.1"}}')).annotatedIp, undefined, 'own keys only');
  t.is(annotatedIp(' 198.18.0.9 '), '198.18.0.9');
  for (const bad of ['junk', '198.18.0.9/32', 'fd00::1', 7, null]) {
    const e = t.throws(() => annotatedIp(bad));
    t.true(isBerthError(e) && e.kind === 'InvalidConfig' && /berth\.io\/ip/.test(e.details ?? ''), String(bad));
  }
});
