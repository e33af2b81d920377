import test from 'ava';
import fc from 'fast-check';
import { ELEMENTS_PER_MESSAGE, NFPROTO_BRIDGE, ifnameIpv4Key, readAcks, setElemBatch } from './nft-setelem';

interface Msg { type: number; flags: number; seq: number; family: number; resId: number; attrs: Buffer }

/** Splits a datagram into netlink messages, checking every length on the way. */
function messages(b: Buffer): Msg[] {
  const out: Msg[] = [];
  let off = 0;
  while (off < b.length) {
    const len = b.readUInt32LE(off);
    if (len < 20 || off + len > b.length || len % 4 !== 0) throw new Error(`bad length ${len} at ${off}`);
    out.push({ type: b.readUInt16LE(off + 4), flags: b.readUInt16LE(off + 6), seq: b.readUInt32LE(off + 8), family: b[off + 16], resId: b.readUInt16BE(off + 18), attrs: b.subarray(off + 20, off + len) });
    off += len;
  }
  return out;
}

/** Attributes of one level: type without the nested flag, and payload. */
function attrs(b: Buffer): { type: number; nested: boolean; payload: Buffer }[] {
  const out = [];
  let off = 0;
  while (off < b.length) {
    const len = b.readUInt16LE(off);
    const type = b.readUInt16LE(off + 2);
    if (len < 4 || off + len > b.length) throw new Error(`bad attribute length ${len}`);
    out.push({ type: type & 0x3fff, nested: (type & 0x8000) !== 0, payload: b.subarray(off + 4, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

/** The keys a set-element message carries, read back through all three levels of nesting. */
function keysOf(m: Msg): string[] {
  const top = attrs(m.attrs);
  const elements = top.find((a) => a.type === 3)!;
  return attrs(elements.payload).map((elem) => {
    const key = attrs(elem.payload).find((a) => a.type === 1)!;
    return attrs(key.payload).find((a) => a.type === 1)!.payload.toString('hex');
  });
}

const key = (veth: string, ip: string) => ifnameIpv4Key(veth, ip);

test('a key is the name NUL-padded to 16 bytes, then the address in network order', (t) => {
  t.is(key('bth0000abcd', '198.18.3.7').toString('hex'), Buffer.from('bth0000abcd').toString('hex') + '00'.repeat(5) + 'c6120307');
  t.throws(() => key('', '198.18.0.1'), { message: /IFNAMSIZ/ });
  t.throws(() => key('a'.repeat(16), '198.18.0.1'), { message: /IFNAMSIZ/ });
  t.throws(() => key('bth1', '198.18.0.256'), { message: /IPv4/ });
  t.throws(() => key('bth1', '::1'), { message: /IPv4/ });
});

test('a batch is BEGIN, removals, additions, END, each framed for the nftables subsystem', (t) => {
  const b = setElemBatch({ family: NFPROTO_BRIDGE, table: 'berth', set: 'pods', remove: [key('bth1', '198.18.0.1')], add: [key('bth2', '198.18.0.2'), key('bth3', '198.18.0.3')] }, 100);
  const m = messages(b.bytes);
  t.deepEqual(m.map((x) => x.type), [0x10, 0x0a0e, 0x0a0c, 0x11]);
  t.deepEqual(m.map((x) => x.seq), [100, 101, 102, 103]);
  t.deepEqual(b.acks, [{ seq: 101, op: 'remove' }, { seq: 102, op: 'add' }]);
  t.deepEqual([m[0].resId, m[3].resId], [10, 10], 'batch markers name NFNL_SUBSYS_NFTABLES');
  t.deepEqual([m[1].family, m[2].family], [NFPROTO_BRIDGE, NFPROTO_BRIDGE]);
  t.is(m[1].flags, 0x1 | 0x4, 'DELSETELEM: request, ack');
  t.is(m[2].flags, 0x1 | 0x4 | 0x400, 'NEWSETELEM: request, ack, create (no EXCL: adding twice is fine)');
  const top = attrs(m[2].attrs);
  t.deepEqual(top.map((a) => [a.type, a.nested]), [[1, false], [2, false], [3, true]]);
  t.is(top[0].payload.toString(), 'berth\0');
  t.is(top[1].payload.toString(), 'pods\0');
  t.deepEqual(keysOf(m[2]), [key('bth2', '198.18.0.2').toString('hex'), key('bth3', '198.18.0.3').toString('hex')]);
});

test('nothing to change is no batch at all', (t) => {
  const b = setElemBatch({ family: NFPROTO_BRIDGE, table: 'berth', set: 'pods', remove: [], add: [] }, 7);
  t.is(b.bytes.length, 0);
  t.deepEqual(b.acks, []);
});

test('any change round-trips: every key lands in exactly one message, in order, within the 16-bit attribute limit', (t) => {
  fc.assert(fc.property(fc.nat(2600), fc.nat(2600), fc.nat(0x3fffffff), (nRemove, nAdd, seq) => {
    const mk = (n: number, tag: string) => Array.from({ length: n }, (_, i) => key(`bth${tag}${i.toString(16)}`, `198.18.${i >> 8}.${i & 255}`));
    const remove = mk(nRemove, 'r');
    const add = mk(nAdd, 'a');
    const b = setElemBatch({ family: NFPROTO_BRIDGE, table: 'berth', set: 'pods', remove, add }, seq);
    if (nRemove + nAdd === 0) return b.bytes.length === 0;
    const m = messages(b.bytes);
    const body = m.slice(1, -1);
    const expected = Math.ceil(nRemove / ELEMENTS_PER_MESSAGE) + Math.ceil(nAdd / ELEMENTS_PER_MESSAGE);
    if (body.length !== expected || b.acks.length !== expected) return false;
    if (!body.every((x) => attrs(x.attrs).every((a) => a.payload.length + 4 <= 0xffff))) return false;
    const got = (type: number) => body.filter((x) => x.type === type).flatMap(keysOf);
    const hex = (ks: Buffer[]) => ks.map((k) => k.toString('hex'));
    return JSON.stringify(got(0x0a0e)) === JSON.stringify(hex(remove)) && JSON.stringify(got(0x0a0c)) === JSON.stringify(hex(add))
      && new Set(m.map((x) => x.seq)).size === m.length && body.every((x, i) => x.seq === b.acks[i].seq);
  }), { numRuns: 40 });
  t.pass();
});

test('acks are read from a datagram of several messages; other messages are skipped', (t) => {
  const nlerr = (seq: number, errno: number) => {
    const b = Buffer.alloc(36);
    b.writeUInt32LE(36, 0);
    b.writeUInt16LE(2, 4);
    b.writeUInt32LE(seq, 8);
    b.writeInt32LE(-errno, 16);
    return b;
  };
  const other = Buffer.alloc(20);
  other.writeUInt32LE(20, 0);
  other.writeUInt16LE(0x0a0c, 4);
  t.deepEqual(readAcks(Buffer.concat([nlerr(5, 0), other, nlerr(6, 2)])), [{ seq: 5, errno: 0 }, { seq: 6, errno: 2 }]);
  t.deepEqual(readAcks(Buffer.from([1, 2, 3])), [], 'a runt is no ack');
});
