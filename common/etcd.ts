/**
 * One way to open an etcd client, shared by controller and agent: endpoints,
 * optional TLS with client certificates, and a per-call deadline so that an
 * unreachable etcd surfaces as StoreUnavailable (503 / CNI 11) instead of a hang.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';

export interface EtcdConnection {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  callTimeoutMs?: number;
}

export function openEtcd(c: EtcdConnection): Etcd3 {
  const timeout = c.callTimeoutMs ?? 5000;
  const opts: IOptions = {
    hosts: c.endpoints,
    dialTimeout: Math.min(timeout, 3000),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
  };
  if (c.caFile) {
    opts.credentials = {
      rootCertificate: readFileSync(c.caFile),
      ...(c.keyFile ? { privateKey: readFileSync(c.keyFile) } : {}),
      ...(c.certFile ? { certChain: readFileSync(c.certFile) } : {}),
    };
  }
  return new Etcd3(opts);
}

export function splitEndpoints(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}
