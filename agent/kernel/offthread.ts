/**
 * Writes that go to the kernel from a libuv pool thread when the socket's
 * netns is known (requestOffThread): the kernel runs a request inside
 * sendmsg(2), under RTNL, and under a burst of ADDs (each creating a veth
 * pair) a request sent from the JS thread waits there for RTNL, stalling
 * every other CNI request and the reconcile loop. Sockets not opened by
 * agent/kernel/netns.ts send on the JS thread as before.
 */
import { requestOffThread } from './netns';
import { nl, rtRequest, type Netlink, type RtBody } from './nl';

/** Sends one write (type, body, flags) for sock; rejects with a KernelError naming op. */
export async function rtWrite(sock: Netlink, op: string, type: number, body: RtBody, flags: number, onSocket: () => Promise<unknown>): Promise<void> {
  const off = requestOffThread(sock, op, rtRequest(type, body, flags));
  await (off ?? nl(op, onSocket()));
}
