// The prebuilds the package tests use: rebuilt with `npm run prebuild` when missing or older than
// the native sources, so the tests never check a stale binary.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tryLockFile } from '../../src/native.js';

export const root = join(import.meta.dirname, '..', '..');
export const arches = ['x64', 'arm64'] as const;

export function prebuildPath(arch: (typeof arches)[number]): string {
  return join(root, 'prebuilds', `linux-${arch}`, 'ivshmem.glibc.node');
}

function newestSource(): number {
  const files = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((n) => join(root, 'native', n))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

/**
 * Rebuilds the prebuilds of `wanted` that are missing or stale. Test files run in parallel
 * workers: a host-wide lock makes one build at a time (and one apt-get), and the staleness is
 * looked at again under it, so a worker that waited finds the other's build and reuses it.
 */
export function ensurePrebuilds(wanted: readonly (typeof arches)[number][] = arches): void {
  const lockDir = join(root, 'build');
  mkdirSync(lockDir, { recursive: true });
  let release: (() => void) | null;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while ((release = tryLockFile(join(lockDir, 'prebuild.lock'))) === null) Atomics.wait(nap, 0, 0, 200);
  try {
    const stale = wanted.filter((a) => !existsSync(prebuildPath(a)) || statSync(prebuildPath(a)).mtimeMs < newestSource());
    if (stale.length) execFileSync(process.execPath, [join(root, 'scripts', 'prebuild.mjs'), ...stale], { stdio: 'inherit' });
  } finally {
    release();
  }
}

/** The ELF e_machine of a shared object: 62 for x86-64, 183 for AArch64. */
export function elfMachine(bytes: Buffer): number {
  return bytes.readUInt16LE(18);
}
