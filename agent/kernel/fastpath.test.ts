/**
 * FastPath's bookkeeping against an in-memory stand-in for the bpf(2) calls
 * (the real programs and maps are exercised by test/agent-fastpath.test.ts
 * and test/fastpath-native.test.ts): what ends up in the maps, and that a
 * retired veth is never pointed at again.
 */
import test from 'ava';
import * as fs from 'node:fs';
import type { FastPathWant } from '../fastpath';
import { FastPath } from './fastpath';
import type { BpfAddon } from './netns';

/** Maps as plain Maps of hex keys; "fds" are real (from /dev/null) so close() can close them. */
function memoryBpf() {
  const maps = new Map<number, Map<string, string>>();
  const attached = new Map<number, number>(); // link fd -> ifindex
  let failNextUpdate = false;
  const fd = () => fs.openSync('/dev/null', 'r');
  const bpf: BpfAddon = {
    bpfMapCreate: () => { const f = fd(); maps.set(f, new Map()); return f; },
    bpfMapUpdate: (f, k, v) => {
      if (failNextUpdate) { failNextUpdate = false; throw new Error('ENOMEM'); }
      maps.get(f)!.set(k.toString('hex'), v.toString('hex'));
    },
    bpfMapDelete: (f, k) => maps.get(f)!.delete(k.toString('hex')),
    bpfLoadFastPath: () => fd(),
    tcxAttachIngress: (_p, ifindex) => { const f = fd(); attached.set(f, ifindex); return f; },
  };
  return { bpf, maps, attached, failOnce: () => { failNextUpdate = true; } };
}

const hexIp = (ip: string) => Buffer.from(ip.split('.').map(Number)).toString('hex');
const le = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b.toString('hex'); };

function want(o: Partial<FastPathWant> = {}): FastPathWant {
  return {
    vxlan: 4,
    present: new Set(['berth.vxlan', 'bthA']),
    peers: new Map([['198.18.0.5', { index: 9, veth: 'bthA' }]]),
    remotes: new Map([['198.18.0.9', '198.19.0.12']]),
    ...o,
  };
}

test('sync fills both maps and attaches ingress on the vxlan, egress on each pod veth', (t) => {
  const m = memoryBpf();
  const fp = FastPath.open(m.bpf);
  t.teardown(() => fp.close());
  const [peerMap, remoteMap] = [...m.maps.keys()];
  t.true(fp.sync(want()).ops > 0);
  t.deepEqual([...m.maps.get(peerMap)!], [[hexIp('198.18.0.5'), le(9)]]);
  t.deepEqual([...m.maps.get(remoteMap)!], [[hexIp('198.18.0.9'), le(4) + hexIp('198.19.0.12')]]);
  t.deepEqual([...m.attached.values()].filter((i) => i !== 1).sort(), [4, 9], 'besides the probe on lo');
  t.deepEqual(fp.sync(want()), { ops: 0, failed: [] }, 'a second pass changes nothing');
});

test('a veth DEL forgot is not re-learned by a pass that read the host before the DEL', (t) => {
  const m = memoryBpf();
  const fp = FastPath.open(m.bpf);
  t.teardown(() => fp.close());
  const peerMap = [...m.maps.keys()][0];
  fp.sync(want());
  fp.forgetVeth('bthA');
  t.is(m.maps.get(peerMap)!.size, 0);
  fp.sync(want()); // stale: still lists bthA in service
  t.is(m.maps.get(peerMap)!.size, 0, 'the tombstone holds');
  fp.sync(want({ present: new Set(['berth.vxlan']), peers: new Map() })); // bthA gone from the host
  t.is(fp.stats().retired, 0, 'tombstone dropped once the link is gone');
  fp.learnLocal('198.18.0.5', 'bthA', 11); // a new pair under the same name
  t.deepEqual([...m.maps.get(peerMap)!], [[hexIp('198.18.0.5'), le(11)]]);
});

test('a recreated berth.vxlan rewrites every egress entry with its new ifindex', (t) => {
  const m = memoryBpf();
  const fp = FastPath.open(m.bpf);
  t.teardown(() => fp.close());
  const remoteMap = [...m.maps.keys()][1];
  fp.sync(want());
  fp.sync(want({ vxlan: 21 }));
  t.deepEqual([...m.maps.get(remoteMap)!], [[hexIp('198.18.0.9'), le(21) + hexIp('198.19.0.12')]]);
});

test('a refused map write is retried by the next pass, and ADD turns a remote address local', (t) => {
  const m = memoryBpf();
  const fp = FastPath.open(m.bpf);
  t.teardown(() => fp.close());
  const [peerMap, remoteMap] = [...m.maps.keys()];
  m.failOnce();
  t.throws(() => fp.sync(want()));
  fp.sync(want());
  t.is(m.maps.get(peerMap)!.size, 1);
  t.is(m.maps.get(remoteMap)!.size, 1);
  fp.learnLocal('198.18.0.9', 'bthB', 12); // the remote pod's address moved here
  t.is(m.maps.get(remoteMap)!.size, 0);
  t.deepEqual(m.maps.get(peerMap)!.get(hexIp('198.18.0.9')), le(12));
});
