/**
 * The kernel side of agent/nft-setelem.ts: one NETLINK_NETFILTER socket,
 * opened in the agent's own (the host's) network namespace, that sends a
 * set-element batch and waits for the kernel's acknowledgements. The kernel
 * runs the whole batch inside sendmsg(2), so the answers are queued by the
 * time the send completes; the timeout only guards against a socket that
 * lost them (receive buffer overrun).
 */
import { RawNetlinkSocket } from 'netlink';
import { KernelError, errnoName } from './nl';
import { NETLINK_NETFILTER, readAcks, setElemBatch, type SetElemChange } from '../nft-setelem';

const ACK_TIMEOUT_MS = 2000;


export type SetElemApply = (change: SetElemChange) => Promise<void>;

export class NftSetSocket {
  private seq = Math.floor(Math.random() * 0x3fffffff);
  private readonly waiting = new Map<number, (errno: number) => void>();
  private closed = false;

  /** socket: one opened in the netns whose tables it changes (openNftSocketIn for another netns). */
  constructor(private readonly sock: RawNetlinkSocket = new RawNetlinkSocket(NETLINK_NETFILTER)) {
    sock.on('message', (msg) => {
      for (const a of readAcks(msg)) {
        const w = this.waiting.get(a.seq);
        this.waiting.delete(a.seq);
        w?.(a.errno);
      }
    });
    // A socket error fails whatever waits; the caller falls back to nft -f.
    sock.on('error', () => this.failAll(-1));
    sock.unref();
  }

  /**
   * Applies change as one transaction. Any refusal rejects with a
   * KernelError naming the errno, and the kernel has changed nothing.
   */
  apply: SetElemApply = async (change) => {
    if (this.closed) throw new KernelError('EBADF', 'nftables set update: socket closed');
    const batch = setElemBatch(change, this.seq);
    this.seq = (this.seq + batch.acks.length + 2) & 0x3fffffff;
    if (batch.acks.length === 0) return;
    const answers = batch.acks.map((a) => new Promise<{ op: string; errno: number }>((resolve) => {
      this.waiting.set(a.seq, (errno) => resolve({ op: a.op, errno }));
    }));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), ACK_TIMEOUT_MS); });
    try {
      await new Promise<void>((resolve, reject) => this.sock.send(batch.bytes, {}, (e) => (e ? reject(new KernelError(e.code ?? 'EIO', 'nftables set update: send')) : resolve())));
      const got = await Promise.race([Promise.all(answers), timeout]);
      if (got === 'timeout') throw new KernelError('ETIMEDOUT', `nftables set update: no answer within ${ACK_TIMEOUT_MS} ms`);
      // One refusal aborts the whole batch, a removal of a missing element
      // (ENOENT) included: the memory was wrong, and the caller rewrites the table.
      const refused = got.find((a) => a.errno !== 0);
      if (refused) throw new KernelError(refused.errno > 0 ? errnoName(refused.errno) ?? String(refused.errno) : 'EIO', `nftables set update (${change.family}/${change.table}/${change.set}, ${refused.op})`);
    } finally {
      clearTimeout(timer);
      for (const a of batch.acks) this.waiting.delete(a.seq);
    }
  };

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(-1);
    this.sock.close();
  }

  private failAll(errno: number): void {
    for (const [seq, w] of this.waiting) {
      this.waiting.delete(seq);
      w(errno);
    }
  }
}
