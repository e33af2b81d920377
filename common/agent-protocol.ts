/**
 * The local protocol between the `berth` CNI plugin and the host's agent.
 *
 * One request per connection on a unix socket (default /run/berth/agent.sock,
 * mode 0600): the plugin writes one JSON line, the agent answers one JSON
 * line and closes. The plugin stays a thin front: it parses and validates,
 * then forwards; the agent holds every connection, cache and kernel handle.
 * Results travel in the internal (CNI 1.1) shape and are converted to the
 * requested cniVersion by the plugin on the way out.
 */
import type { ErrorBody } from './errors';
import type { CniResult } from './cni-types';

export const DEFAULT_AGENT_SOCKET = '/run/berth/agent.sock';

export type AgentVerb = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS';

export interface AgentRequest {
  verb: AgentVerb;
  containerId: string;
  /** Path of the container's netns; may be empty on DEL. */
  netns: string;
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
