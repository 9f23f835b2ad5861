// The loader: a prebuild first, then a local build; and an error that lists every path tried.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nativePath } from '../../src/native.js';

const root = join(import.meta.dirname, '..', '..');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// A package tree with the built JavaScript and, optionally, an addon at `addonPath`.
function tree(addonPath?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ivshmem-loader-'));
  dirs.push(dir);
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(root, 'package.json'), join(dir, 'package.json'));
  if (addonPath) {
    mkdirSync(join(dir, addonPath, '..'), { recursive: true });
    cpSync(nativePath, join(dir, addonPath));
  }
  return dir;
}

function loadFrom(dir: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', `import('${join(dir, 'dist', 'native.js')}').then((m) => console.log(m.nativePath), (e) => { console.log(e.message); process.exitCode = 3; })`], { encoding: 'utf8' }).trim();
}

describe('the addon loader', () => {
  it('takes a prebuild for this platform before a local build', () => {
    const dir = tree(`prebuilds/${process.platform}-${process.arch}/ivshmem.glibc.node`);
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
    cpSync(nativePath, join(dir, 'build', 'Release', 'ivshmem.node'));
    expect(loadFrom(dir)).toBe(join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'ivshmem.glibc.node'));
  });

  it('falls back to build/Release', () => {
    const dir = tree('build/Release/ivshmem.node');
    expect(loadFrom(dir)).toBe(join(dir, 'build', 'Release', 'ivshmem.node'));
  });

  it('lists every path it tried, and why each failed', () => {
    const dir = tree();
    mkdirSync(join(dir, 'prebuilds', `${process.platform}-${process.arch}`), { recursive: true });
    // Not an ELF file: dlopen refuses it.
    cpSync(join(root, 'package.json'), join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'broken.node'));
    let message = '';
    try {
      loadFrom(dir);
    } catch (error) {
      message = String((error as { stdout: string }).stdout);
    }
    expect(message).toMatch(/could not be loaded\. Run `npm rebuild ivshmem`/);
    expect(message).toContain(`${join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'broken.node')}: `);
    expect(message).toContain(`${join(dir, 'build', 'Release', 'ivshmem.node')}: not found`);
    expect(message).toContain(`${join(dir, 'build', 'Debug', 'ivshmem.node')}: not found`);
  });
});
