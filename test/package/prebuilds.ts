// The prebuilds the package tests use: rebuilt with `npm run prebuild` when missing or older than
// the native sources, so the tests never check a stale binary.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const root = join(import.meta.dirname, '..', '..');
export const arches = ['x64', 'arm64'] as const;

export function prebuildPath(arch: (typeof arches)[number]): string {
  return join(root, 'prebuilds', `linux-${arch}`, 'ivshmem.glibc.node');
}

function newestSource(): number {
  const files = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((n) => join(root, 'native', n))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

export function ensurePrebuilds(): void {
  const stale = arches.filter((a) => !existsSync(prebuildPath(a)) || statSync(prebuildPath(a)).mtimeMs < newestSource());
  if (stale.length) execFileSync(process.execPath, [join(root, 'scripts', 'prebuild.mjs'), ...stale], { stdio: 'inherit' });
}

/** The ELF e_machine of a shared object: 62 for x86-64, 183 for AArch64. */
export function elfMachine(bytes: Buffer): number {
  return bytes.readUInt16LE(18);
}
