/**
 * One way to open an etcd client, shared by controller and agent: endpoints,
 * optional TLS with client certificates, and deadlines so that an
 * unreachable etcd surfaces as StoreUnavailable (503 / CNI 11) instead of a hang.
 *
 * Deadlines: each attempt of a call gets `attemptTimeoutMs` (default 1.5 s),
 * and retryable failures are retried within `callTimeoutMs` (default 5 s) in
 * all. A call in flight when the etcd leader dies is lost with it: with one
 * 5 s deadline it stalled 5 s although a new leader was elected in ~1.2 s;
 * with short attempts it is re-sent as soon as an attempt times out (range
 * reads of many keys keep the whole budget per attempt). What is
 * retried and what trips the per-member breaker is in etcd-faults.ts.
 */
import { Etcd3, type CallContext, type IOptions } from 'etcd3';
import { memberBreaker, retryWithin } from './etcd-faults';
import { setPageSize } from './etcd-paged';
import { checkTlsMaterial, readTlsFile, type TlsFileSet } from './tls';

export interface EtcdConnection {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Overall budget of one call, retries included. */
  callTimeoutMs?: number;
  /** Deadline of one attempt of a call. */
  attemptTimeoutMs?: number;
  /** Keys per page of a paged prefix read (common/etcd-paged.ts). */
  pageSize?: number;
  /** gRPC receive limit (default 4 MiB); tests shrink it to prove reads are paged. */
  maxReceiveBytes?: number;
}

export function openEtcd(c: EtcdConnection): Etcd3 {
  const budget = c.callTimeoutMs ?? 5000;
  const attempt = Math.min(c.attemptTimeoutMs ?? 1500, budget);
  const opts: IOptions = {
    hosts: c.endpoints,
    dialTimeout: Math.min(budget, 3000),
    defaultCallOptions: (ctx: CallContext) => (ctx.isStream ? {} : { deadline: Date.now() + attemptDeadline(ctx, attempt, budget) }),
    faultHandling: {
      host: () => memberBreaker({ threshold: 3, openMs: 1000 }),
      global: retryWithin({ budgetMs: budget }),
    },
    grpcOptions: {
      // Notice a silently dead member (host crash, partition) on long-lived watch streams;
      // etcd's default enforcement allows pings every 5 s.
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 3_000,
      ...(c.maxReceiveBytes !== undefined ? { 'grpc.max_receive_message_length': c.maxReceiveBytes } : {}),
    },
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
  const etcd = new Etcd3(opts);
  if (c.pageSize !== undefined) setPageSize(etcd, c.pageSize);
  return etcd;
}

/**
 * Short attempts are for the calls a leader loss stalls: transactions and
 * point reads. A page of a range read (thousands of keys) may legitimately
 * take longer on a loaded etcd; cutting it short would only repeat the work.
 */
function attemptDeadline(ctx: CallContext, attempt: number, budget: number): number {
  if (ctx.service === 'KV' && ctx.method === 'range' && ctx.params.range_end !== undefined && Number(ctx.params.limit ?? 0) !== 1) return budget;
  return attempt;
}

export function splitEndpoints(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}
