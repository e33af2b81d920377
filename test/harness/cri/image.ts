/**
 * The CRI e2e's sandbox image, built here with no registry: pause.c compiled
 * static, one uncompressed layer holding /pause (Debian tar, fixed owner and
 * mtime), and an OCI image layout (oci-layout, index.json, blobs/sha256/…:
 * config, manifest, layer, each named by its sha256) packed into one tarball
 * that `ctr images import` reads. The index names the image through the
 * `io.containerd.image.name` annotation, which is how ctr tags an import.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** dist/test/harness/cri/image.js -> test/harness/cri/pause.c (the source is not copied to dist/) */
export const PAUSE_SOURCE = join(__dirname, '../../../../test/harness/cri/pause.c');

export interface Blob { mediaType: string; digest: string; size: number }

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Builds the image tarball for `name` (e.g. 'docker.io/berth/pause:test') under `dir`; returns its path. */
export function buildPauseImage(dir: string, name: string): string {
  const rootfs = join(dir, 'rootfs');
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(blobs, { recursive: true });
  execFileSync('gcc', ['-Wall', '-Wextra', '-Werror', '-O2', '-static', '-o', join(rootfs, 'pause'), PAUSE_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });

  const layerTar = join(dir, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-cf', layerTar, 'pause']);
  const put = (mediaType: string, data: Buffer): Blob => {
    const digest = sha256(data);
    writeFileSync(join(blobs, digest.slice('sha256:'.length)), data);
    return { mediaType, digest, size: data.length };
  };
  const layerData = readFileSync(layerTar);
  const layer = put('application/vnd.oci.image.layer.v1.tar', layerData);
  const config = put('application/vnd.oci.image.config.v1+json', Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Entrypoint: ['/pause'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [layer.digest] }, // uncompressed: the diff id is the layer's digest
  })));
  const manifest = put('application/vnd.oci.image.manifest.v1+json', Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer],
  })));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ ...manifest, annotations: { 'io.containerd.image.name': name }, platform: { architecture: 'amd64', os: 'linux' } }],
  }));
  const out = join(dir, 'pause-image.tar');
  execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', layout, '-cf', out, 'oci-layout', 'index.json', 'blobs']);
  return out;
}
