/**
 * What the berth-controller and berth-agent command lines share: the etcd
 * connection flags, the token file, integer parsing and one-line errors.
 * (berthctl has its own, in controller/cli/.)
 */
import { InvalidArgumentError, type Command, type OptionValues } from 'commander';
import { BerthError } from './errors';
import type { Logger } from './log';
import { splitEndpoints, type EtcdConnection } from './etcd';
import { checkPair, readTlsFile } from './tls';

export const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer');
  return n;
};

/** --etcd-endpoints and the three TLS files. */
export function addEtcdOptions(cmd: Command): Command {
  return cmd
    .option('--etcd-endpoints <urls>', 'comma-separated etcd client URLs (http(s):// or unix:///path)', process.env.BERTH_ETCD_ENDPOINTS ?? 'http://127.0.0.1:2379')
    .option('--etcd-ca <file>', 'CA bundle for etcd TLS')
    .option('--etcd-cert <file>', 'client certificate for etcd TLS')
    .option('--etcd-key <file>', 'client key for etcd TLS');
}

/**
 * The connection addEtcdOptions' flags describe. A client certificate
 * without --etcd-ca is refused (etcd3 would ignore it), and so is a
 * certificate without its key or a key without its certificate.
 */
export function etcdConnectionFrom(o: OptionValues): EtcdConnection {
  const file = (path: unknown, flag: string) => (typeof path === 'string' ? { path, flag } : undefined);
  checkPair(file(o.etcdCert, '--etcd-cert'), file(o.etcdKey, '--etcd-key'));
  if ((o.etcdCert || o.etcdKey) && !o.etcdCa) {
    throw new BerthError('InvalidConfig', `--etcd-cert ${o.etcdCert}`, '--etcd-cert and --etcd-key need --etcd-ca (the CA that signed etcd\'s certificate)');
  }
  return { endpoints: splitEndpoints(String(o.etcdEndpoints)), caFile: o.etcdCa, certFile: o.etcdCert, keyFile: o.etcdKey };
}

/** The bearer token in a --token-file, trimmed; undefined without one. An unreadable or empty file is InvalidConfig. */
export function readTokenFile(file: string | undefined): string | undefined {
  if (!file) return undefined;
  const token = readTlsFile({ path: file, flag: '--token-file' }).toString('utf8').trim();
  if (token === '') throw new BerthError('InvalidConfig', file, '--token-file is empty');
  return token;
}

/** A usage error is one line, without commander's help dump. */
export function oneLineErrors(cmd: Command): Command {
  return cmd.showHelpAfterError(false).configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') });
}

/**
 * Node's process warnings (deprecations, experimental features, TLS
 * overrides) as JSON log lines instead of Node's own "(node:…) Warning:" text,
 * so stderr stays one JSON object per line.
 */
export function jsonWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => log.warn('node warning', { name: w.name, code: w.code, warning: w.message }));
}
