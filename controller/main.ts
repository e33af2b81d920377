#!/usr/bin/env node
/**
 * berth-controller: the lease authority. Many replicas may run against one
 * etcd; they coordinate only through etcd transactions and one election.
 */
import { Command } from 'commander';
import { addEtcdOptions, etcdConnectionFrom, jsonWarnings, oneLineErrors, positiveInt, readTokenFile } from '../common/daemon-cli';
import { BerthError, castError } from '../common/errors';
import { createLogger } from '../common/log';
import { startController } from './app';

const program = oneLineErrors(addEtcdOptions(new Command('berth-controller')
  .description('Berth lease authority: pools, hosts and stable address leases in etcd, served over HTTP')))
  .option('--listen <addr...>', 'HTTP listen addresses: host:port or unix:///path (mode 0600)', ['127.0.0.1:7480'])
  .option('--token-file <file>', 'require this bearer token on every API call')
  .option('--tls-cert <file>', 'serve HTTPS on TCP listeners with this certificate (PEM, chain allowed); re-read when it changes')
  .option('--tls-key <file>', 'private key of --tls-cert')
  .option('--client-ca <file>', 'require client certificates signed by this CA (mTLS); needs --tls-cert')
  .option('--insecure-listen', 'allow a non-loopback listener with neither --token-file nor --client-ca (logged as a warning)')
  .option('--body-timeout-ms <ms>', 'a request body must arrive in full within this time (408 after it)', positiveInt, 10_000)
  .option('--metrics-listen <addr>', 'Prometheus /metrics, /healthz and /readyz: host:port or unix:///path (mode 0600)', '127.0.0.1:9480')
  .option('--sweep-ms <ms>', 'expiry sweep interval', positiveInt, 1000)
  .option('--history-max-age-hours <h>', 'keep lease history this long', positiveInt, 168)
  .option('--history-max-per-address <n>', 'keep at most this many events per address', positiveInt, 200)
  .option('--host-dead-after <seconds>', 'declare a host dead once its agent has been absent this long; its bound leases become held', positiveInt, 300);

async function main(): Promise<void> {
  program.parse();
  const o = program.opts();
  const log = createLogger({ component: 'controller' });
  jsonWarnings(log);
  if (o.tlsCert === undefined && o.tlsKey !== undefined || o.tlsCert !== undefined && o.tlsKey === undefined) {
    throw new BerthError('InvalidConfig', o.tlsCert ?? o.tlsKey, '--tls-cert and --tls-key go together');
  }
  if (o.clientCa !== undefined && o.tlsCert === undefined) throw new BerthError('InvalidConfig', o.clientCa, '--client-ca needs --tls-cert and --tls-key');
  const ctl = await startController({
    etcd: etcdConnectionFrom(o),
    listen: o.listen, token: readTokenFile(o.tokenFile), sweepMs: o.sweepMs,
    ...(o.tlsCert !== undefined ? { tls: { certFile: o.tlsCert, keyFile: o.tlsKey, clientCaFile: o.clientCa } } : {}),
    insecureListen: o.insecureListen === true, bodyTimeoutMs: o.bodyTimeoutMs,
    historyMaxAgeMs: o.historyMaxAgeHours * 3600_000, historyMaxPerAddress: o.historyMaxPerAddress, hostDeadAfterSeconds: o.hostDeadAfter, metricsListen: o.metricsListen, log,
  });
  const shutdown = (sig: string) => {
    log.info('shutting down', { signal: sig });
    ctl.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((e) => {
  const err = castError(e);
  process.stderr.write(`berth-controller: ${err.message}${err.details ? `: ${err.details}` : ''}\n`);
  process.exit(1);
});
