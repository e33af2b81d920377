/**
 * Who a container is, for the lease store: the identity that keeps its
 * address across restarts and hosts. Pure; derived from CNI_ARGS and this
 * agent's host name only, so a DEL sent by another process (another
 * environment) on the same host derives the same key.
 *
 * In order of precedence (the first that applies wins):
 *
 *   BERTH_IDENTITY=<id>                        -> <id> verbatim           (explicit)
 *   K8S_POD_NAMESPACE=<ns>;K8S_POD_NAME=<pod>  -> k8s/<ns>/<pod>          (k8s)
 *   K8S_POD_NAME=<name> (no namespace)         -> host/<host>/<name>      (host)
 *   nothing usable                             -> container/<CNI_CONTAINERID> (container)
 *
 * A name without a namespace is not a Kubernetes pod: podman (CNI backend)
 * sends its container name that way. Such a name is unique on one host only,
 * so it is scoped to the host: a container restarted under the same name on
 * the same host gets its address back, two hosts running a container of the
 * same name never collide, and neither can take a real pod's `k8s/...`
 * address. Kubernetes names never contain '/', so the three forms never meet.
 * K8S_POD_NAMESPACE without K8S_POD_NAME names nothing and is ignored. Empty
 * values count as absent (CNI_ARGS "K=" is legal).
 *
 * `container/<id>` is the weak form: it changes with every new container, so
 * such a workload gets a new address each time, and its release frees the
 * address at once (no hold; controller/lease-rules.ts holdSecondsFor). Its
 * DEL is found by binding, not by identity; see agent/cni/del.ts.
 */
import { BerthError } from '../common/errors';
import type { IdentitySource } from '../common/records';

export type { IdentitySource };

export interface Identity {
  identity: string;
  source: IdentitySource;
}

/** The controller's limit (controller/store.ts validateBind). */
export const MAX_IDENTITY_LENGTH = 512;

/** Printable ASCII without space: what survives CNI_ARGS, logs and etcd keys unharmed. */
const PRINTABLE = /^[\x21-\x7e]+$/;
/** A Kubernetes name segment: no '/', printable. */
const K8S_SEGMENT = /^[\x21-\x2e\x30-\x7e]+$/;

function bad(key: string, value: string, why: string): never {
  throw new BerthError('InvalidEnv', `CNI_ARGS ${key}=${JSON.stringify(value)}: ${why}`, 'invalid environment variable: CNI_ARGS');
}

/** Derives the identity; throws InvalidEnv (4) when CNI_ARGS names one badly. `host` is this agent's host name. */
export function identityFor(args: Readonly<Record<string, string>>, containerId: string, host: string): Identity {
  const explicit = args.BERTH_IDENTITY ?? '';
  if (explicit !== '') {
    if (!PRINTABLE.test(explicit)) bad('BERTH_IDENTITY', explicit, 'must be printable ASCII without spaces');
    if (explicit.length > MAX_IDENTITY_LENGTH) bad('BERTH_IDENTITY', explicit.slice(0, 40), `longer than ${MAX_IDENTITY_LENGTH} characters`);
    return { identity: explicit, source: 'explicit' };
  }
  const pod = args.K8S_POD_NAME ?? '';
  if (pod !== '') {
    if (!K8S_SEGMENT.test(pod)) bad('K8S_POD_NAME', pod, "must be printable ASCII without spaces or '/'");
    const ns = args.K8S_POD_NAMESPACE ?? '';
    if (ns !== '' && !K8S_SEGMENT.test(ns)) bad('K8S_POD_NAMESPACE', ns, "must be printable ASCII without spaces or '/'");
    const identity = ns !== '' ? `k8s/${ns}/${pod}` : `host/${host}/${pod}`;
    if (identity.length > MAX_IDENTITY_LENGTH) bad('K8S_POD_NAME', pod.slice(0, 40), `identity longer than ${MAX_IDENTITY_LENGTH} characters`);
    return { identity, source: ns !== '' ? 'k8s' : 'host' };
  }
  if (containerId === '') throw new BerthError('InvalidEnv', 'CNI_CONTAINERID: missing', 'required env variables missing: CNI_CONTAINERID');
  return { identity: `container/${containerId}`, source: 'container' };
}

/** Like identityFor, but undefined instead of an error (DEL must not fail on bad args). */
export function tryIdentityFor(args: Readonly<Record<string, string>>, containerId: string, host: string): Identity | undefined {
  try {
    return identityFor(args, containerId, host);
  } catch {
    return undefined;
  }
}
