/**
 * Who may call, decided before the controller listens. A TCP listener on a
 * non-loopback address must be guarded by a bearer token, client
 * certificates (mTLS) or both; without either it is refused unless the
 * operator says --insecure-listen, and then it is logged as a warning. A
 * token over plain HTTP off loopback is allowed but warned about: the token
 * crosses the wire in clear. Unix sockets are guarded by their mode (0600).
 */
import { BerthError } from '../common/errors';
import { isLoopbackHost } from './request';

export interface ListenGuards { token: boolean; tls: boolean; mtls: boolean; insecureListen: boolean }

export interface ListenWarning { msg: string; listen: string }

export function splitHostPort(listen: string): [string, string] {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new BerthError('InvalidConfig', listen, 'listen address must be host:port or unix:///path');
  return [m[1], m[2]];
}

/** Throws InvalidConfig for a listener the guards don't cover; returns what to warn about. */
export function checkListeners(listens: string[], g: ListenGuards): ListenWarning[] {
  const warnings: ListenWarning[] = [];
  for (const listen of listens) {
    if (listen.startsWith('unix://')) continue;
    const [host] = splitHostPort(listen);
    if (isLoopbackHost(host)) continue;
    if (!g.token && !g.mtls) {
      if (!g.insecureListen) {
        throw new BerthError('InvalidConfig', `--listen ${listen}`,
          'refusing a non-loopback listener with neither --token-file nor --client-ca (pass --insecure-listen to allow it)');
      }
      warnings.push({ msg: 'listening on a non-loopback address with no authentication (--insecure-listen): anyone who reaches it can change leases', listen });
    } else if (!g.tls) {
      warnings.push({ msg: 'the bearer token crosses the network in clear text on this listener; serve TLS with --tls-cert and --tls-key', listen });
    }
  }
  return warnings;
}
