/**
 * The fast path's native calls on their own (agent/native/berth_bpf.c):
 * both programs pass the kernel's verifier, and map calls refuse buffers
 * whose size doesn't match the map (the kernel would read past them).
 * Maps and programs belong to no network namespace; nothing is attached here.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { bpfAddon } from '../agent/kernel/netns';

test('the fast path programs load (the verifier accepts them)', (t) => {
  const bpf = bpfAddon();
  const peers = bpf.bpfMapCreate(4, 4, 16);
  const remotes = bpf.bpfMapCreate(4, 8, 16);
  t.teardown(() => [peers, remotes].forEach((fd) => fs.closeSync(fd)));
  for (const [kind, map] of [['ingress', peers], ['egress', remotes]] as const) {
    const prog = bpf.bpfLoadFastPath(kind, map);
    t.true(prog > 2, kind);
    fs.closeSync(prog);
  }  const checked = bpf.bpfLoadFastPath('egress', remotes, peers);
  t.true(checked > 2, 'egress with the source check');
  fs.closeSync(checked);
});

test('map calls take exactly the map key and value sizes', (t) => {
  const bpf = bpfAddon();
  const fd = bpf.bpfMapCreate(4, 8, 16);
  t.teardown(() => fs.closeSync(fd));
  const key = Buffer.from([198, 18, 0, 5]);
  t.throws(() => bpf.bpfMapUpdate(fd, key, Buffer.alloc(4)), { message: /size does not match/ });
  t.throws(() => bpf.bpfMapDelete(fd, Buffer.alloc(3)), { message: /size does not match/ });
  bpf.bpfMapUpdate(fd, key, Buffer.alloc(8));
  t.true(bpf.bpfMapDelete(fd, key));
  t.false(bpf.bpfMapDelete(fd, key), 'a second delete finds nothing');
  t.throws(() => bpf.bpfLoadFastPath('sideways' as never, fd), { instanceOf: TypeError });
});
