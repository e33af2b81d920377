/**
 * What the berth-controller and berth-agent command lines share: the etcd
 * connection flags, the token file, integer parsing and one-line errors.
 * (berthctl has its own, in controller/cli/.)
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command, type OptionValues } from 'commander';
import { splitEndpoints, type EtcdConnection } from './etcd';

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

/** The connection addEtcdOptions' flags describe. */
export function etcdConnectionFrom(o: OptionValues): EtcdConnection {
  return { endpoints: splitEndpoints(String(o.etcdEndpoints)), caFile: o.etcdCa, certFile: o.etcdCert, keyFile: o.etcdKey };
}

/** The bearer token in a --token-file, trimmed; undefined without one. */
export function readTokenFile(file: string | undefined): string | undefined {
  return file ? readFileSync(file, 'utf8').trim() : undefined;
}

/** A usage error is one line, without commander's help dump. */
export function oneLineErrors(cmd: Command): Command {
  return cmd.showHelpAfterError(false).configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') });
}
