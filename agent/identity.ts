/**
 * Who a container is, for the lease store: the identity that keeps its
 * address across restarts and hosts. Pure; derived from CNI_ARGS only, so a
 * DEL sent by another process (another environment) derives the same key.
 *
 * In order of precedence (the first that applies wins):
 *
 *   BERTH_IDENTITY=<id>                        -> <id> verbatim  (explicit)
 *   K8S_POD_NAMESPACE=<ns>;K8S_POD_NAME=<pod>  -> k8s/<ns>/<pod>
 *   K8S_POD_NAME=<pod> (no namespace)          -> k8s/<pod>
 *   nothing usable                             -> container/<CNI_CONTAINERID>
 *
 * `k8s/<pod>` rather than `k8s/default/<pod>`: a runtime that sends no
 * namespace is not telling us "default", and guessing would let it take the
 * address of a real default-namespace pod. Kubernetes names never contain
 * '/', so the two-segment and three-segment forms can never collide.
 * K8S_POD_NAMESPACE without K8S_POD_NAME names nothing and is ignored. Empty
 * values count as absent (CNI_ARGS "K=" is legal).
 *
 * `container/<id>` is the weak form: it changes with every new container, so
 * such a workload gets a new address each time (and its DEL is found by
 * binding, not by identity; see agent/cni/del.ts).
 */
import { BerthError } from '../common/errors';

export type IdentitySource = 'explicit' | 'k8s' | 'container';

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

/** Derives the identity; throws InvalidEnv (4) when CNI_ARGS names one badly. */
export function identityFor(args: Readonly<Record<string, string>>, containerId: string): Identity {
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
    const identity = ns !== '' ? `k8s/${ns}/${pod}` : `k8s/${pod}`;
    if (identity.length > MAX_IDENTITY_LENGTH) bad('K8S_POD_NAME', pod.slice(0, 40), `identity longer than ${MAX_IDENTITY_LENGTH} characters`);
    return { identity, source: 'k8s' };
  }
  if (containerId === '') throw new BerthError('InvalidEnv', 'CNI_CONTAINERID: missing', 'required env variables missing: CNI_CONTAINERID');
  return { identity: `container/${containerId}`, source: 'container' };
}

/** Like identityFor, but undefined instead of an error (DEL must not fail on bad args). */
export function tryIdentityFor(args: Readonly<Record<string, string>>, containerId: string): Identity | undefined {
  try {
    return identityFor(args, containerId);
  } catch {
    return undefined;
  }
}
