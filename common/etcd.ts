/**
 * One way to open an etcd client, shared by controller and agent: endpoints,
 * optional TLS with client certificates, and a per-call deadline so that an
 * unreachable etcd surfaces as StoreUnavailable (503 / CNI 11) instead of a hang.
 */
import { Etcd3, type IOptions } from 'etcd3';
import { checkTlsMaterial, readTlsFile, type TlsFileSet } from './tls';

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
    // Read and checked here so a bad file is named by its flag, not reported as an internal ENOENT.
    const files: TlsFileSet = {
      ca: { path: c.caFile, flag: '--etcd-ca' },
      ...(c.certFile ? { cert: { path: c.certFile, flag: '--etcd-cert' } } : {}),
      ...(c.keyFile ? { key: { path: c.keyFile, flag: '--etcd-key' } } : {}),
    };
    const ca = readTlsFile(files.ca!);
    const cert = files.cert && readTlsFile(files.cert);
    const key = files.key && readTlsFile(files.key);
    checkTlsMaterial({ ca, cert, key }, files);
    opts.credentials = { rootCertificate: ca, ...(key ? { privateKey: key } : {}), ...(cert ? { certChain: cert } : {}) };
  }
  return new Etcd3(opts);
}

export function splitEndpoints(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}
