/**
 * The agent's answer to one `berth` relay request (common/relay-protocol.ts):
 * the CNI contract (cni/plugin.ts) runs here, on the raw env and stdin the
 * relay passed, with the agent's handlers called in-process. The answer is
 * the relay's exit code, stdout and stderr.
 *
 * The pod's network namespace is the descriptor the relay opened in the
 * runtime's mount namespace and passed over the socket, never CNI_NETNS
 * resolved in ours (docs/netns.md). It must be a network namespace, and not
 * the agent's own or the host's (init's); anything else is InvalidEnv (4),
 * before a handler runs. The handlers open it as /proc/self/fd/<fd>
 * (AgentRequest.nsHandle); the fd is closed when the answer is ready.
 */
import { closeSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import type { AgentRequest } from '../common/agent-protocol';
import { castError, isBerthError } from '../common/errors';
import type { Logger } from '../common/log';
import type { RelayAnswer, RelayFrame } from '../common/relay-protocol';
import { runPlugin } from '../cni/plugin';
import type { CniHandler } from './cni-api';
import { isOwnNetns, openNetnsFd } from './kernel/netns';

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([k, v]) => [v, k]));

function sameInode(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.ino === y.ino && x.dev === y.dev;
  } catch {
    return false;
  }
}

/** Why the namespace the relay passed can't be a pod's, or undefined. */
export function passedNetnsProblem(frame: Pick<RelayFrame, 'hasFd' | 'nsErrno'>, fd: number): string | undefined {
  if (fd < 0) {
    if (frame.nsErrno === constants.errno.ENOENT || frame.nsErrno === 0) return 'no network namespace';
    return `cannot open the network namespace (${ERRNO_NAMES.get(frame.nsErrno) ?? `errno ${frame.nsErrno}`})`;
  }
  const handle = `/proc/self/fd/${fd}`;
  try {
    closeSync(openNetnsFd(handle));
  } catch (e) {
    const err = castError(e);
    if (err.kind === 'InvalidRequest') return 'not a network namespace';
    if (err.kind === 'NotFound') return 'no network namespace';
    return `cannot open the network namespace (${err.details ?? err.message})`;
  }
  if (isOwnNetns(handle)) return "the agent's own network namespace, not a pod's";
  if (sameInode(handle, '/proc/1/ns/net')) return "the host's network namespace, not a pod's";
  return undefined;
}

export async function answerRelay(frame: RelayFrame, fd: number, handler: CniHandler, log: Logger): Promise<RelayAnswer> {
  let out = '';
  let err = '';
  const nsHandle = fd >= 0 ? `/proc/self/fd/${fd}` : undefined;
  try {
    const code = await runPlugin({
      env: frame.env,
      readStdin: async () => frame.stdin,
      stdout: (s) => (out += s),
      stderr: (s) => (err += s),
      netnsProblem: async () => passedNetnsProblem(frame, fd),
      send: (req: AgentRequest) => handler(nsHandle && (req.verb === 'ADD' || req.verb === 'CHECK') ? { ...req, nsHandle } : req),
      internalError: (e) => log.error(e.stack ?? e.message, { kind: isBerthError(e) ? e.kind : 'Internal' }),
    });
    return { code, out, err };
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
