/**
 * The CNI binary runs once per pod event, so it must stay light: one file,
 * executable, node shebang, and nothing but Node built-ins required at run
 * time. etcd3/grpc alone cost ~200 ms of start-up (STYLE.md field notes).
 */
import test from 'ava';
import { readFileSync, statSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { BIN, ensureRelay, execPlugin } from '../sim/exec';

test.before(() => ensureRelay());

test('dist/bin/berth is one executable file with a node shebang', (t) => {
  const text = readFileSync(BIN, 'utf8');
  t.true(text.startsWith('#!/usr/bin/env node\n'));
  t.is(statSync(BIN).mode & 0o777, 0o755);
});

test('the bundle holds no etcd3, grpc or protobuf code and requires only built-ins', (t) => {
  const text = readFileSync(BIN, 'utf8');
  for (const heavy of ['etcd3', '@grpc', 'grpc-js', 'protobufjs', 'cockatiel', 'netlink.node', 'node_modules']) {
    t.false(text.includes(heavy), heavy);
  }
  const required = [...text.matchAll(/require\(["']([^"']+)["']\)/g)].map((m) => m[1]);
  t.true(required.length > 0);
  for (const r of required) t.true(isBuiltin(r), `non-builtin require: ${r}`);
  t.true(text.length < 200_000, `bundle is ${text.length} bytes`);
});

test('the bundle runs', async (t) => {
  const r = await execPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.1.0"}');
  t.is(r.code, 0);
  t.is(r.json.cniVersion, '1.1.0');
});
