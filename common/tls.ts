/**
 * TLS files for the controller's API, its clients and etcd: read with errors
 * that name the flag and the file (never "internal error: ENOENT"), checked
 * as PEM and as a matching pair at start, and re-read when they change on
 * disk, which is how cert-manager and kubelet rotate them (a new file, or a
 * symlink swapped to a new one: inode, size or mtime change).
 */
import { statSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { BerthError } from './errors';

export interface TlsMaterial { cert?: Buffer; key?: Buffer; ca?: Buffer }

/** A file and the flag that named it, for error messages. */
export interface TlsFile { path: string; flag: string }

export interface TlsFileSet { cert?: TlsFile; key?: TlsFile; ca?: TlsFile }

/** Reads one TLS file; a failure is InvalidConfig naming the flag, the path and the reason. */
export function readTlsFile(f: TlsFile): Buffer {
  try {
    return readFileSync(f.path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new BerthError('InvalidConfig', `${f.path}: ${err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : err.code ?? err.message}`, `cannot read ${f.flag} file`);
  }
}

/** PEM checks at load time, so a bad file is reported by its flag instead of at the first handshake. */
export function checkTlsMaterial(m: TlsMaterial, files: TlsFileSet): void {
  const bad = (f: TlsFile | undefined, what: string, e: unknown) =>
    new BerthError('InvalidConfig', `${f?.path ?? '?'}: ${(e as Error).message.replace(/^error:[0-9A-F]+:/, '')}`, `${f?.flag ?? 'TLS'} is not ${what}`);
  if (m.ca) {
    try { new X509Certificate(m.ca); } catch (e) { throw bad(files.ca, 'a PEM certificate bundle', e); }
  }
  if (m.cert) {
    try { new X509Certificate(m.cert); } catch (e) { throw bad(files.cert, 'a PEM certificate', e); }
  }
  if (m.key) {
    try { createSecureContext({ key: m.key }); } catch (e) { throw bad(files.key, 'a PEM private key', e); }
  }
  if (m.cert && m.key) {
    try { createSecureContext({ cert: m.cert, key: m.key }); } catch (e) {
      throw new BerthError('InvalidConfig', `${files.key?.path} and ${files.cert?.path}`, `${files.key?.flag} does not match ${files.cert?.flag}`);
    }
  }
}

/** A certificate and its key come together: one without the other is refused. */
export function checkPair(cert: TlsFile | undefined, key: TlsFile | undefined): void {
  if ((cert === undefined) !== (key === undefined)) {
    const [given, missing] = cert ? [cert, key ?? { flag: keyFlagOf(cert.flag) }] : [key!, { flag: certFlagOf(key!.flag) }];
    throw new BerthError('InvalidConfig', `${given.flag} ${given.path}`, `${given.flag} needs ${missing.flag}`);
  }
}
const keyFlagOf = (certFlag: string) => certFlag.replace(/cert$/, 'key');
const certFlagOf = (keyFlag: string) => keyFlag.replace(/key$/, 'cert');

function signature(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'absent';
  }
}

/**
 * A set of TLS files that follows changes on disk. load() reads and checks
 * them (throwing labelled errors); reload() is cheap to call often (three
 * stats) and reads them again only when one changed since the last attempt.
 */
export class TlsFiles {
  private seen = '';
  private material: TlsMaterial | undefined;
  constructor(readonly files: TlsFileSet) {}

  paths(): string[] {
    return [this.files.cert, this.files.key, this.files.ca].filter((f): f is TlsFile => f !== undefined).map((f) => f.path);
  }

  private signatures(): string {
    return this.paths().map(signature).join('|');
  }

  load(): TlsMaterial {
    const sig = this.signatures();
    const m: TlsMaterial = {};
    if (this.files.cert) m.cert = readTlsFile(this.files.cert);
    if (this.files.key) m.key = readTlsFile(this.files.key);
    if (this.files.ca) m.ca = readTlsFile(this.files.ca);
    checkTlsMaterial(m, this.files);
    this.seen = sig;
    this.material = m;
    return m;
  }

  /** New material when a file changed since the last attempt and loads; undefined otherwise (errors go to onError, once per change). */
  reload(onError: (e: BerthError) => void = () => {}): TlsMaterial | undefined {
    const sig = this.signatures();
    if (sig === this.seen) return undefined;
    this.seen = sig;
    try {
      return this.load();
    } catch (e) {
      onError(e as BerthError);
      return undefined;
    }
  }

  /** The material in force: reloaded if a file changed and loads, else the last good one. */
  current(onError?: (e: BerthError) => void): TlsMaterial {
    this.reload(onError);
    return this.material ?? this.load();
  }
}
