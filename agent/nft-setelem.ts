/**
 * Pure: the nfnetlink batch that adds and removes elements of one nftables
 * set, and the reading of the kernel's acknowledgements. A CNI ADD changes
 * one element of the bridge table's `pods` set (agent/firewall.ts); sending
 * that change as one netlink batch costs microseconds, where `nft -f` costs
 * a process spawn of several milliseconds of CPU on the ADD's path.
 *
 * Wire format (include/uapi/linux/netfilter/nfnetlink.h, nf_tables.h):
 *
 *   BATCH_BEGIN  nlmsghdr, nfgenmsg{AF_UNSPEC, v0, res_id = NFNL_SUBSYS_NFTABLES (BE)}
 *   DELSETELEM   nlmsghdr(REQUEST|ACK), nfgenmsg{family}, TABLE, SET, ELEMENTS[...]   (removals first)
 *   NEWSETELEM   nlmsghdr(REQUEST|ACK|CREATE), nfgenmsg{family}, TABLE, SET, ELEMENTS[...]
 *   BATCH_END
 *
 * The kernel applies the batch as one transaction (all or nothing) and
 * answers every message that asked with an NLMSG_ERROR (error 0 = done).
 * Without NLM_F_EXCL, adding an element that is already there is not an
 * error; removing one that is gone answers ENOENT and aborts the batch.
 */

export const NETLINK_NETFILTER = 12;
export const NFPROTO_BRIDGE = 7;

const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_CREATE = 0x400;
const NLA_F_NESTED = 0x8000;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_DATA_VALUE = 1;
const IFNAMSIZ = 16;
/**
 * Elements per message: ELEMENTS is one attribute and nla_len is 16 bits,
 * so a message holds at most about 2,000 of our 32-byte elements.
 */
export const ELEMENTS_PER_MESSAGE = 1000;

const align4 = (n: number) => (n + 3) & ~3;

function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

const nested = (type: number, parts: Buffer[]) => attr(type | NLA_F_NESTED, Buffer.concat(parts));
const cstring = (s: string) => Buffer.from(`${s}\0`, 'utf8');

function message(type: number, flags: number, seq: number, family: number, resId: number, attrs: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([family, 0, resId >> 8, resId & 0xff]), ...attrs]);
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(16 + body.length, 0);
  hdr.writeUInt16LE(type, 4);
  hdr.writeUInt16LE(flags, 6);
  hdr.writeUInt32LE(seq >>> 0, 8);
  hdr.writeUInt32LE(0, 12); // port id: the kernel fills in ours
  return Buffer.concat([hdr, body]);
}

/**
 * The key of an `ifname . ipv4_addr` element as the kernel stores it: the
 * name NUL-padded to IFNAMSIZ, then the address in network order (each part
 * of a concatenation fills whole 32-bit registers; 16 and 4 bytes already do).
 */
export function ifnameIpv4Key(ifname: string, ip: string): Buffer {
  const name = Buffer.from(ifname, 'utf8');
  if (name.length === 0 || name.length >= IFNAMSIZ) throw new Error(`interface name ${JSON.stringify(ifname)} does not fit IFNAMSIZ`);
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  const key = Buffer.alloc(IFNAMSIZ + 4);
  name.copy(key, 0);
  parts.forEach((p, i) => { key[IFNAMSIZ + i] = Number(p); });
  return key;
}

export interface SetElemChange {
  family: number;
  table: string;
  set: string;
  /** Keys to remove, then keys to add, in one transaction. */
  remove: Buffer[];
  add: Buffer[];
}

export interface SetElemBatch {
  /** One datagram: the whole batch. */
  bytes: Buffer;
  /** Sequence numbers the kernel acknowledges, one per element message, with what each did. */
  acks: { seq: number; op: 'remove' | 'add' }[];
}

/** The batch for change; sequence numbers start at seq. Empty (no bytes) when there is nothing to change. */
export function setElemBatch(change: SetElemChange, seq: number): SetElemBatch {
  const msgs: Buffer[] = [];
  const acks: SetElemBatch['acks'] = [];
  let next = seq;
  const elementMessages = (keys: Buffer[], type: number, flags: number, op: 'remove' | 'add') => {
    for (let i = 0; i < keys.length; i += ELEMENTS_PER_MESSAGE) {
      const elems = keys.slice(i, i + ELEMENTS_PER_MESSAGE).map((k) => nested(NFTA_LIST_ELEM, [nested(NFTA_SET_ELEM_KEY, [attr(NFTA_DATA_VALUE, k)])]));
      const s = ++next;
      msgs.push(message((NFNL_SUBSYS_NFTABLES << 8) | type, flags, s, change.family, 0, [
        attr(NFTA_SET_ELEM_LIST_TABLE, cstring(change.table)),
        attr(NFTA_SET_ELEM_LIST_SET, cstring(change.set)),
        nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems),
      ]));
      acks.push({ seq: s, op });
    }
  };
  elementMessages(change.remove, NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, 'remove');
  elementMessages(change.add, NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 'add');
  if (acks.length === 0) return { bytes: Buffer.alloc(0), acks };
  const begin = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, []);
  const end = message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, ++next, 0, NFNL_SUBSYS_NFTABLES, []);
  return { bytes: Buffer.concat([begin, ...msgs, end]), acks };
}

/** The NLMSG_ERROR answers in one datagram: sequence number and errno (0 = done). */
export function readAcks(datagram: Buffer): { seq: number; errno: number }[] {
  const out: { seq: number; errno: number }[] = [];
  let off = 0;
  while (off + 16 <= datagram.length) {
    const len = datagram.readUInt32LE(off);
    if (len < 16 || off + len > datagram.length) break;
    if (datagram.readUInt16LE(off + 4) === NLMSG_ERROR && len >= 20) {
      out.push({ seq: datagram.readUInt32LE(off + 8), errno: 0 - datagram.readInt32LE(off + 16) });
    }
    off += align4(len);
  }
  return out;
}
