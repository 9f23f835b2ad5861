// The loader: a local build first (as node-gyp-build), then a prebuild; lazy, so the package
// imports where the addon cannot load; and an error that names each package manager's fix and
// lists every path tried.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nativePath } from '../../src/native.js';

const root = join(import.meta.dirname, '..', '..');
const platform = `${process.platform}-${process.arch}`;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// A package tree with the built JavaScript and, optionally, the addon at each of `addonPaths`.
function tree(...addonPaths: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'ivshmem-loader-'));
  dirs.push(dir);
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(root, 'package.json'), join(dir, 'package.json'));
  for (const addonPath of addonPaths) {
    mkdirSync(join(dir, addonPath, '..'), { recursive: true });
    cpSync(nativePath(), join(dir, addonPath));
  }
  return dir;
}

function run(dir: string, code: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, encoding: 'utf8' }).trim();
}

function loadFrom(dir: string): string {
  return run(dir, `import('${join(dir, 'dist', 'native.js')}').then((m) => m.nativePath()).then(console.log, (e) => { console.log(e.message); process.exitCode = 3; })`);
}

describe('the addon loader', () => {
  it('takes a local build/Release before a prebuild', () => {
    const dir = tree(`prebuilds/${platform}/ivshmem.glibc.node`, 'build/Release/ivshmem.node');
    expect(loadFrom(dir)).toBe(join(dir, 'build', 'Release', 'ivshmem.node'));
  });

  it('falls back to the prebuild for this platform', () => {
    const dir = tree(`prebuilds/${platform}/ivshmem.glibc.node`);
    expect(loadFrom(dir)).toBe(join(dir, 'prebuilds', platform, 'ivshmem.glibc.node'));
  });

  it('skips a build/Release that does not load (another architecture) for a prebuild that does', () => {
    const dir = tree(`prebuilds/${platform}/ivshmem.glibc.node`);
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
    cpSync(join(root, 'package.json'), join(dir, 'build', 'Release', 'ivshmem.node'));
    expect(loadFrom(dir)).toBe(join(dir, 'prebuilds', platform, 'ivshmem.glibc.node'));
  });

  it("names each package manager's fix and lists every path it tried, and why each failed", () => {
    const dir = tree();
    mkdirSync(join(dir, 'prebuilds', platform), { recursive: true });
    // Not an ELF file: dlopen refuses it.
    cpSync(join(root, 'package.json'), join(dir, 'prebuilds', platform, 'broken.node'));
    let message = '';
    try {
      loadFrom(dir);
    } catch (error) {
      message = String((error as { stdout: string }).stdout);
    }
    expect(message).toContain('could not be loaded');
    expect(message).toContain('npm rebuild ivshmem');
    expect(message).toContain('pnpm approve-builds');
    expect(message).toContain('pnpm.onlyBuiltDependencies');
    expect(message).toContain('yarn rebuild ivshmem');
    expect(message).toContain(`${join(dir, 'prebuilds', platform, 'broken.node')}: `);
    expect(message).toContain(`${join(dir, 'build', 'Release', 'ivshmem.node')}: not found`);
    expect(message).toContain(`${join(dir, 'build', 'Debug', 'ivshmem.node')}: not found`);
  });

  it('loads lazily: without an addon the package imports, codecs and ringSize work, and the first native call fails with ERR_IVSHMEM_NATIVE', () => {
    const dir = tree();
    const out = run(
      dir,
      `const m = await import('${join(dir, 'dist', 'index.js')}');
       const c = m.jsonCodec();
       const value = { a: 'é' };
       const bytes = Buffer.alloc(c.maxSize(value));
       const text = c.decode(bytes, 0, c.encodeInto(value, bytes, 0)).a;
       let code = null;
       try { m.openFile('/dev/shm/ivshmem-loader-never', { size: 4096, create: true }); } catch (e) { code = e.code; }
       console.log(JSON.stringify({ text, ring: m.ringSize(4096), code }));`,
    );
    expect(JSON.parse(out)).toEqual({ text: 'é', ring: expect.any(Number), code: 'ERR_IVSHMEM_NATIVE' });
  });

  // Every native call on the run-to-completion path (waitWord, eventfdDrain) went through a
  // Proxy trap; once loaded, the exported binding is the addon itself.
  it('after the first load, native members are plain own data properties, called without a trap; a spread before load gets them all', () => {
    const dir = tree('build/Release/ivshmem.node');
    const out = run(
      dir,
      `const { types } = await import('node:util');
       const m = await import('${join(dir, 'dist', 'native.js')}');
       const before = types.isProxy(m.native);
       const spread = { ...m.native };
       const path = m.nativePath();
       const d = Object.getOwnPropertyDescriptor(m.native, 'waitWord');
       console.log(JSON.stringify({ before, after: types.isProxy(m.native), data: typeof d?.value, spread: typeof spread.eventfdDrain, path }));`,
    );
    expect(JSON.parse(out)).toEqual({ before: true, after: false, data: 'function', spread: 'function', path: join(dir, 'build', 'Release', 'ivshmem.node') });
  });

  it('loads lazily: `ivshmem --help` and `ivshmem lab --help` work without an addon', () => {
    const dir = tree();
    const help = execFileSync(process.execPath, [join(dir, 'dist', 'cli', 'main.js'), '--help'], { encoding: 'utf8' });
    expect(help).toContain('usage: ivshmem');
    const lab = execFileSync(process.execPath, [join(dir, 'dist', 'cli', 'main.js'), 'lab', '--help'], { encoding: 'utf8' });
    expect(lab).toContain('lab');
  });
});
