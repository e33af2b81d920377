/**
 * The API's request parsing, pure: targets, percent-decoding, JSON depth,
 * content type, Authorization and Host. Property tests check that no input
 * makes these throw anything but a 4xx BerthError.
 */
import test from 'ava';
import fc from 'fast-check';
import { isBerthError, type BerthError } from '../common/errors';
import {
  bearerToken, checkHost, decodeSegment, isJsonContentType, isLoopbackHost, jsonTooDeep, loopbackHostNames, MAX_JSON_DEPTH, parseJsonObject, parseTarget,
} from './request';

const kindOf = (f: () => unknown): string | undefined => {
  try { f(); return undefined; } catch (e) { return isBerthError(e) ? e.kind : `foreign: ${String(e)}`; }
};

test('parseTarget splits path and query, accepts absolute-form, refuses what is not a path', (t) => {
  t.like(parseTarget('/v1/leases?pool=a&x=%zz'), { path: '/v1/leases' });
  t.is(parseTarget('/v1/leases?pool=a').query.get('pool'), 'a');
  t.is(parseTarget('http://127.0.0.1:7480/v1/pools?x=1').path, '/v1/pools');
  t.is(parseTarget('//').path, '//');
  t.is(kindOf(() => parseTarget('*')), 'InvalidRequest');
  t.is(kindOf(() => parseTarget('v1/pools')), 'InvalidRequest');
});

test('decodeSegment: malformed percent-encoding is a 400, not a URIError', (t) => {
  t.is(decodeSegment('a%2Fb'), 'a/b');
  for (const bad of ['%', '%zz', '%E0%A4%A', '%ff']) t.is(kindOf(() => decodeSegment(bad)), 'InvalidRequest', bad);
});

test('property: parsing any target and decoding any segment throws only 400s', (t) => {
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ maxLength: 50 }), (target, seg) => {
    for (const f of [() => parseTarget(target), () => parseTarget(`/${target}`), () => decodeSegment(seg), () => decodeSegment(`%${seg}`)]) {
      const k = kindOf(f);
      if (k !== undefined && k !== 'InvalidRequest') return false;
    }
    return true;
  }), { numRuns: 2000 });
  t.pass();
});

test('jsonTooDeep counts nesting outside strings only', (t) => {
  t.false(jsonTooDeep('{"reserved":["a","b"]}'));
  t.true(jsonTooDeep('['.repeat(20_000) + ']'.repeat(20_000)));
  t.false(jsonTooDeep(`{"s":"${'['.repeat(100)}"}`), 'brackets in strings do not count');
  t.false(jsonTooDeep(`{"s":"\\"${'['.repeat(100)}"}`), 'an escaped quote does not end the string');
  t.false(jsonTooDeep('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH)));
  t.true(jsonTooDeep('['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1)));
});

test('property: jsonTooDeep agrees with the depth of the value JSON.stringify wrote', (t) => {
  const depth = (v: unknown): number => (typeof v === 'object' && v !== null ? 1 + Math.max(0, ...Object.values(v).map(depth)) : 0);
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 8 }), (v, max) => jsonTooDeep(JSON.stringify(v), max) === depth(v) > max));
  t.pass();
});

test('parseJsonObject: a reserved array 20,000 deep is a 400, and so are empty, non-JSON and non-object bodies', (t) => {
  const deep = `{"name":"p","cidr":"198.18.0.0/24","reserved":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
  t.is(kindOf(() => parseJsonObject(deep)), 'Decode');
  t.is(kindOf(() => parseJsonObject('')), 'InvalidRequest');
  t.is(kindOf(() => parseJsonObject('{')), 'Decode');
  t.is(kindOf(() => parseJsonObject('[1]')), 'Decode');
  t.deepEqual(parseJsonObject('{"a":[1]}'), { a: [1] });
});

test('isJsonContentType: application/json in any case, with parameters; nothing else', (t) => {
  for (const ok of ['application/json', 'Application/JSON', 'application/json; charset=utf-8']) t.true(isJsonContentType(ok), ok);
  for (const no of [undefined, '', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp']) {
    t.false(isJsonContentType(no), String(no));
  }
});

test('bearerToken: the scheme is case-insensitive (RFC 7235), the token is not', (t) => {
  for (const h of ['Bearer s3cret', 'bearer s3cret', 'BEARER s3cret', 'bEaReR  s3cret']) t.is(bearerToken(h), 's3cret', h);
  for (const h of [undefined, '', 'Basic czNjcmV0', 'Bearer', 'Bearer ', 'Bearers3cret', 'Bearer a b']) t.is(bearerToken(h), undefined, String(h));
});

test('loopback listeners accept only localhost, 127.0.0.1 and [::1] with their port', (t) => {
  t.true(isLoopbackHost('127.0.0.1') && isLoopbackHost('::1') && isLoopbackHost('[::1]') && isLoopbackHost('localhost') && isLoopbackHost('127.1.2.3'));
  t.false(isLoopbackHost('0.0.0.0') || isLoopbackHost('::') || isLoopbackHost('10.0.0.1') || isLoopbackHost('evil.example'));
  const ok = loopbackHostNames('127.0.0.1', 7480, false);
  for (const h of ['127.0.0.1:7480', 'localhost:7480', 'LOCALHOST:7480', '[::1]:7480']) t.notThrows(() => checkHost(h, ok), h);
  for (const h of [undefined, 'evil.example:7480', '127.0.0.1', '127.0.0.1:7481', 'localhost.evil.example:7480']) {
    const e = t.throws(() => checkHost(h, ok)) as BerthError;
    t.is(e.kind, 'InvalidRequest', String(h));
  }
  t.notThrows(() => checkHost('localhost', loopbackHostNames('127.0.0.1', 80, false)), 'the default port may be left out');
  t.notThrows(() => checkHost('[::1]:443', loopbackHostNames('::1', 443, true)));
});
