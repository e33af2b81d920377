/**
 * The request the agent's CNI handlers (agent/cni-handlers.ts) take: what
 * cni/plugin.ts makes of a validated CNI invocation, and what a journalled
 * DEL stores (common/del-journal.ts).
 *
 * The agent's unix socket (default /run/berth/agent.sock, mode 0600) takes
 * two kinds of connection, one request each, told apart by their first bytes:
 *   - "BERTH/3 ..." (or the older "BERTH/2 ..."): the `berth` relay's raw CNI invocation
 *     (common/relay-protocol.ts), validated by cni/plugin.ts in the agent;
 *   - "{...}\n": an AgentRequest line, already validated, answered with one
 *     AgentResponse line; for tests and tools (test/doubles/agent-client.ts).
 * Results are in the internal (CNI 1.1) shape, converted to the requested
 * cniVersion by cni/plugin.ts.
 */
import type { ErrorBody } from './errors';
import type { CniResult } from './cni-types';

export const DEFAULT_AGENT_SOCKET = '/run/berth/agent.sock';

export type AgentVerb = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS';

export interface AgentRequest {
  verb: AgentVerb;
  containerId: string;
  /** Path of the container's netns as the runtime named it (CNI_NETNS); may be empty on DEL. */
  netns: string;
  /**
   * What the agent opens for that netns, when the relay passed it as a
   * descriptor: /proc/self/fd/<n> in the agent (agent/cni-relay.ts). Never
   * journalled: it lives as long as the request.
   */
  nsHandle?: string;
  ifName: string;
  /** Parsed CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, BERTH_IDENTITY, ...). */
  args: Record<string, string>;
  /** The network name from the conflist; with containerId and ifName it keys an attachment (CNI SPEC). */
  network: string;
  /** The pool named by the plugin config. */
  pool: string;
  /** Container-side MTU override from the config; otherwise the overlay MTU. */
  mtu?: number;
  /** Requested addresses from the `ips` capability, without prefix. */
  ips?: string[];
  /** Requested MAC from the `mac` capability. */
  mac?: string;
  /** CHECK: the prevResult the runtime cached. */
  prevResult?: CniResult;
  /** GC: attachments to keep. */
  validAttachments?: { containerId: string; ifName: string }[];
}

export type AgentResponse =
  | { ok: true; result?: CniResult }
  | { ok: false; error: ErrorBody };
