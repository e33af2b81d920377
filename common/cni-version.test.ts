import test from 'ava';
import fc from 'fast-check';
import type { CniResult } from './cni-types';
import {
  SUPPORTED_VERSIONS, compareVersions, isCidr, isIp, isSupportedVersion, parseResult, projectToVersion, toVersion, versionAtLeast, versionInfo,
} from './cni-version';
import { isBerthError } from './errors';

const sample: CniResult = {
  interfaces: [{ name: 'eth0', mac: '02:42:c6:12:00:05', mtu: 1450, sandbox: '/run/netns/x' }],
  ips: [
    { address: '198.18.0.5/16', gateway: '198.18.0.1', interface: 0 },
    { address: 'fd00::5/64', interface: 0 },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '198.18.0.1', mtu: 1400 }],
  dns: { nameservers: ['198.18.0.1'], search: ['svc.local'] },
};

test('VERSION lists every supported version, ascending', (t) => {
  t.deepEqual(versionInfo(), { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  const sorted = [...SUPPORTED_VERSIONS].sort(compareVersions);
  t.deepEqual(sorted, [...SUPPORTED_VERSIONS]);
  t.true(isSupportedVersion('0.4.0'));
  t.false(isSupportedVersion('0.2.0'));
  t.false(isSupportedVersion(1));
});

test('compareVersions is numeric, not lexical', (t) => {
  t.is(compareVersions('0.10.0', '0.9.0'), 1);
  t.true(versionAtLeast('1.1.0', '0.4.0'));
  t.false(versionAtLeast('0.3.1', '0.4.0'));
  const e = t.throws(() => compareVersions('1.0', '1.0.0'));
  t.true(isBerthError(e));
});

test('0.3.x/0.4.0 output carries ips[].version and no mtu', (t) => {
  for (const v of ['0.3.0', '0.3.1', '0.4.0'] as const) {
    const out = toVersion(sample, v) as { cniVersion: string; ips: { version: string }[]; interfaces: object[]; routes: object[] };
    t.is(out.cniVersion, v);
    t.deepEqual(out.ips.map((i) => i.version), ['4', '6']);
    t.deepEqual(out.interfaces[0], { name: 'eth0', mac: '02:42:c6:12:00:05', sandbox: '/run/netns/x' });
    t.deepEqual(out.routes[0], { dst: '0.0.0.0/0', gw: '198.18.0.1' });
  }
});

test('1.0.0 drops ips[].version and mtu; 1.1.0 keeps mtu', (t) => {
  const v1 = toVersion(sample, '1.0.0') as Record<string, any>;
  t.false('version' in v1.ips[0]);
  t.false('mtu' in v1.interfaces[0]);
  const v11 = toVersion(sample, '1.1.0') as Record<string, any>;
  t.deepEqual(v11, { cniVersion: '1.1.0', ...sample });
});

test('parseResult rejects malformed prevResults with Decode naming the path', (t) => {
  const cases: [unknown, string][] = [
    [[], 'prevResult'],
    [{ ips: [{ address: '10.0.0.1' }] }, 'prevResult.ips[0].address'],
    [{ ips: [{ address: '10.0.0.1/24', version: '6' }] }, 'prevResult.ips[0].version'],
    [{ ips: [{ address: '10.0.0.1/24', interface: 0 }] }, 'prevResult.ips[0].interface'],
    [{ interfaces: [{ mac: 'x' }] }, 'prevResult.interfaces[0].name'],
    [{ routes: [{ dst: 'default' }] }, 'prevResult.routes[0].dst'],
    [{ dns: { nameservers: ['dns.example'] } }, 'prevResult.dns.nameservers[0]'],
  ];
  for (const [raw, path] of cases) {
    const e = t.throws(() => parseResult(raw, '1.0.0'));
    t.true(isBerthError(e) && e.kind === 'Decode' && e.cniCode === 6, JSON.stringify(raw));
    t.true(isBerthError(e) && (e.details ?? '').startsWith(path), `${e?.message} ${isBerthError(e) ? e.details : ''}`);
  }
  // 0.x writers must say which family each address is.
  t.throws(() => parseResult({ ips: [{ address: '10.0.0.1/24' }] }, '0.4.0'));
  // 1.x readers tolerate the old field, as libcni does.
  t.deepEqual(parseResult({ ips: [{ address: '10.0.0.1/24', version: '4' }] }, '1.1.0'), { ips: [{ address: '10.0.0.1/24' }] });
});

test('address syntax helpers', (t) => {
  for (const ok of ['10.0.0.1', '::', '::1', 'fd00::5', '2001:db8::1:2', '::ffff:10.0.0.1', '1:2:3:4:5:6:7:8']) t.true(isIp(ok), ok);
  for (const bad of ['10.0.0', '256.0.0.1', '1:2:3:4:5:6:7:8:9', ':::', 'fd00::5::1', 'abc', '01.2.3.4x']) t.false(isIp(bad), bad);
  t.true(isCidr('10.0.0.0/8'));
  t.false(isCidr('10.0.0.0/33'));
  t.true(isCidr('fd00::/128'));
  t.false(isCidr('fd00::/129'));
});

// ---- properties -------------------------------------------------------------

const ipv4Cidr = fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([ip, n]) => `${ip}/${n}`);
const ipv6Cidr = fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([ip, n]) => `${ip}/${n}`);
const mac = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }).map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));

const resultArb: fc.Arbitrary<CniResult> = fc
  .record({
    interfaces: fc.array(
      fc.record(
        { name: fc.stringMatching(/^[a-z][a-z0-9]{0,14}$/), mac, mtu: fc.integer({ min: 576, max: 9000 }), sandbox: fc.constantFrom('/run/netns/a', '/proc/1/ns/net') },
        { requiredKeys: ['name'] },
      ),
      { minLength: 1, maxLength: 3 },
    ),
    ips: fc.array(fc.record({ address: fc.oneof(ipv4Cidr, ipv6Cidr), gateway: fc.oneof(fc.ipV4(), fc.ipV6()), iface: fc.nat() }, { requiredKeys: ['address', 'iface'] }), { minLength: 1, maxLength: 3 }),
    routes: fc.array(fc.record({ dst: fc.oneof(ipv4Cidr, ipv6Cidr), gw: fc.ipV4(), mtu: fc.integer({ min: 576, max: 9000 }) }, { requiredKeys: ['dst'] }), { maxLength: 3 }),
    dns: fc.record({ nameservers: fc.array(fc.ipV4(), { minLength: 1, maxLength: 2 }), domain: fc.domain(), search: fc.array(fc.domain(), { minLength: 1, maxLength: 2 }) }, { requiredKeys: [] }),
  })
  .map(({ interfaces, ips, routes, dns }) => {
    const r: CniResult = { interfaces, ips: ips.map(({ iface, ...ip }) => ({ ...ip, interface: iface % interfaces.length })) };
    if (routes.length > 0) r.routes = routes;
    if (Object.keys(dns).length > 0) r.dns = dns;
    return r;
  });

const versionArb = fc.constantFrom(...SUPPORTED_VERSIONS);

test('property: 1.1.0 round-trips exactly', (t) => {
  fc.assert(fc.property(resultArb, (r) => {
    t.deepEqual(parseResult(JSON.parse(JSON.stringify(toVersion(r, '1.1.0'))), '1.1.0'), r);
  }));
  t.pass();
});

test('property: every version round-trips what it can carry, and conversion is idempotent', (t) => {
  fc.assert(fc.property(resultArb, versionArb, (r, v) => {
    const wire = JSON.parse(JSON.stringify(toVersion(r, v)));
    const back = parseResult(wire, v);
    // What is lost is exactly the mtu fields, and only below 1.1.0.
    const expected: CniResult = JSON.parse(JSON.stringify(r));
    if (v !== '1.1.0') {
      expected.interfaces?.forEach((i) => delete i.mtu);
      expected.routes?.forEach((x) => delete x.mtu);
    }
    t.deepEqual(back, expected);
    t.deepEqual(toVersion(back, v), wire);
    t.deepEqual(projectToVersion(r, v), expected);
  }));
  t.pass();
});

test('property: a result converted to any version is a valid prevResult for any later one', (t) => {
  fc.assert(fc.property(resultArb, versionArb, versionArb, (r, a, b) => {
    const [lo, hi] = compareVersions(a, b) <= 0 ? [a, b] : [b, a];
    // e.g. a 0.4.0 cache read by a 1.x reader keeps addresses and interfaces.
    const back = parseResult(toVersion(r, lo), hi);
    t.deepEqual(back.ips?.map((i) => i.address), r.ips?.map((i) => i.address));
  }));
  t.pass();
});

test('property: isIp agrees with node:net on addresses and near-addresses', async (t) => {
  const { isIP } = await import('node:net');
  const near = fc.oneof(
    fc.ipV4(), fc.ipV6(), fc.ipV4Extended(),
    fc.stringMatching(/^[0-9a-f:.]{1,24}$/),
  );
  fc.assert(fc.property(near, (s) => {
    t.is(isIp(s), isIP(s) !== 0, s);
  }), { numRuns: 2000 });
  t.pass();
});
