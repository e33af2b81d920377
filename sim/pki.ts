/**
 * Real certificates for TLS tests (etcd's in sim/etcd.ts, the controller's
 * API), made with Debian's openssl in a directory: CAs, certificates they
 * sign (valid or already expired), and rotation the way cert-manager does it
 * (a new file renamed over the old). EC P-256 keys: quick to make.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued { cert: string; key: string }

export class Pki {
  private serial = 1;
  constructor(readonly dir: string = mkdtempSync(join(tmpdir(), 'berth-pki-'))) {}

  private openssl(args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /** A self-signed CA. */
  ca(name: string): Issued {
    const r = { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}-key.pem`) };
    this.openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', r.key, '-out', r.cert,
      '-subj', `/CN=${name}`, '-days', '2']);
    return r;
  }

  /**
   * A certificate signed by `ca`, for a server (SANs 127.0.0.1, ::1 and
   * localhost) or a client. days < 0 makes one that has already expired.
   */
  issue(ca: Issued, name: string, o: { days?: number; usage?: 'server' | 'client' } = {}): Issued {
    const r = { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}-key.pem`) };
    const csr = join(this.dir, `${name}.csr`);
    const ext = join(this.dir, `${name}.ext`);
    writeFileSync(ext, o.usage === 'client'
      ? 'extendedKeyUsage=clientAuth\n'
      : 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    this.openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', r.key, '-out', csr, '-subj', `/CN=${name}`]);
    this.openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', String(this.serial++),
      '-days', String(o.days ?? 2), '-extfile', ext, '-out', r.cert]);
    return r;
  }

  /** Replaces `target`'s files with `from`'s the way a rotation does: a new file renamed over the old one. */
  rotate(target: Issued, from: Issued): void {
    for (const k of ['cert', 'key'] as const) {
      const tmp = `${target[k]}.new`;
      execFileSync('cp', [from[k], tmp]);
      renameSync(tmp, target[k]);
    }
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
