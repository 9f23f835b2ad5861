// What a user gets: `npm pack`, then a fresh project installs the tarball (from the cache) with no
// compiler reachable, imports both entry points from ESM, CommonJS and TypeScript (node16,
// nodenext, bundler) and runs the examples. And `--build-from-source` really builds.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensurePrebuilds, root } from './prebuilds.js';

const work = mkdtempSync(join(tmpdir(), 'ivshmem-consumer-'));
let tarball = '';
let packed: string[] = [];
const typesNode = JSON.parse(readFileSync(join(root, 'node_modules', '@types', 'node', 'package.json'), 'utf8')).version as string;
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

beforeAll(() => {
  // Only this machine's: the arm64 one needs a cross compiler, built by the qemu project's test.
  ensurePrebuilds(['x64']);
  // The scripts ran already (pretest builds dist/); running `prepare` here would rewrite dist/
  // under the other test files.
  const [info] = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: root, encoding: 'utf8' }));
  tarball = join(work, info.filename);
  packed = info.files.map((f: { path: string }) => f.path);
}, 600_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

// A folder early on PATH whose compilers and make only leave a mark: any build attempt shows.
function noCompilers(): { env: NodeJS.ProcessEnv; marks: string } {
  const bin = join(work, 'no-compilers');
  const marks = join(work, 'compiler-called');
  mkdirSync(bin, { recursive: true });
  for (const tool of ['cc', 'gcc', 'c++', 'g++', 'make', 'node-gyp']) {
    writeFileSync(join(bin, tool), `#!/bin/sh\necho ${tool} >> ${marks}\nexit 1\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  writeFileSync(join(bin, 'node-gyp.js'), `require('fs').appendFileSync(${JSON.stringify(marks)}, 'node-gyp.js\\n'); process.exit(1);\n`);
  return { env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, npm_config_node_gyp: join(bin, 'node-gyp.js') }, marks };
}

function project(name: string, install: string[], env: NodeJS.ProcessEnv = process.env): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...install], { cwd: dir, env, stdio: 'inherit' });
  return dir;
}

describe('the packed tarball', () => {
  it('ships the prebuilds there are, the built code, its sources for the source maps, and no tests', () => {
    // The arm64 prebuild is there once built (the qemu project's test checks it is packed).
    if (existsSync(join(root, 'prebuilds/linux-arm64/ivshmem.glibc.node'))) expect(packed).toContain('prebuilds/linux-arm64/ivshmem.glibc.node');
    for (const f of ['prebuilds/linux-x64/ivshmem.glibc.node', 'dist/index.js', 'dist/testing/index.js', 'dist/cli/main.js', 'scripts/install.mjs', 'examples/host.mjs', 'examples/run-to-completion.mjs', 'LICENSE', 'CHANGELOG.md', 'README.md']) {
      expect(packed).toContain(f);
    }
    expect(packed.filter((f) => f.startsWith('test/'))).toEqual([]);
    const maps = packed.filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    for (const map of maps) {
      const { sources } = JSON.parse(readFileSync(join(root, map), 'utf8')) as { sources: string[] };
      for (const source of sources) expect(packed, `${map} points at ${source}`).toContain(join(map, '..', source));
    }
  });

  it('declares no @internal member', () => {
    const declarations = packed.filter((f) => f.endsWith('.d.ts'));
    const leaks = declarations.filter((f) => readFileSync(join(root, f), 'utf8').includes('@internal'));
    expect(leaks).toEqual([]);
  });
});

describe('a consumer project', () => {
  let dir = '';
  let marks = '';

  beforeAll(() => {
    const guard = noCompilers();
    marks = guard.marks;
    dir = project('consumer', [`@types/node@${typesNode}`], guard.env);
  }, 600_000);

  it('installs without a compiler: the prebuild is used, nothing is built', () => {
    expect(existsSync(marks) ? readFileSync(marks, 'utf8') : '').toBe('');
    expect(existsSync(join(dir, 'node_modules', 'ivshmem', 'build'))).toBe(false);
  });

  it('imports the entry points from ESM and CommonJS', () => {
    writeFileSync(join(dir, 'esm.mjs'), `import { openFile, ringSize } from 'ivshmem';\nimport { startLab } from 'ivshmem/testing';\nimport * as spec from 'ivshmem/spec';\nconsole.log(typeof openFile, typeof startLab, ringSize(4096) > 4096, Object.keys(spec).length > 0);\n`);
    writeFileSync(join(dir, 'cjs.cjs'), `const { openFile } = require('ivshmem');\nconst { startLab } = require('ivshmem/testing');\nconsole.log(typeof openFile, typeof startLab);\n`);
    expect(execFileSync(process.execPath, ['esm.mjs'], { cwd: dir, encoding: 'utf8' }).trim()).toBe('function function true true');
    expect(execFileSync(process.execPath, ['cjs.cjs'], { cwd: dir, encoding: 'utf8' }).trim()).toBe('function function');
  });

  it.each([
    ['node16', 'node16'],
    ['nodenext', 'nodenext'],
    ['esnext', 'bundler'],
  ])('type-checks against both entry points with module %s, moduleResolution %s (declarations included)', (module, moduleResolution) => {
    writeFileSync(
      join(dir, 'app.ts'),
      `import { openFile, ChannelWriter, IvshmemError, type Device, type Codec } from 'ivshmem';
import { startLab, type Lab, type LabOptions } from 'ivshmem/testing';
using dev: Device = openFile('/dev/shm/x', { size: 4096, create: true });
const codec: Codec<string> | undefined = undefined;
const options: LabOptions = { guests: [{ name: 'a' }] };
export const used = [dev.size, codec, options, ChannelWriter, IvshmemError, startLab as (o: LabOptions) => Promise<Lab>];
`,
    );
    const config = join(dir, `tsconfig.${moduleResolution}.json`);
    writeFileSync(config, JSON.stringify({ compilerOptions: { module, moduleResolution, target: 'es2022', lib: ['es2023', 'esnext.disposable'], strict: true, noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['app.ts'] }));
    execFileSync(process.execPath, [tsc, '-p', config], { cwd: dir, encoding: 'utf8' });
  }, 120_000);

  it('runs the examples: host.mjs serves, guest.mjs --socket shouts', async () => {
    cpSync(join(root, 'examples'), join(dir, 'examples'), { recursive: true });
    const socket = join(dir, 'example.sock');
    const host: ChildProcess = spawn(process.execPath, [join(dir, 'examples', 'host.mjs'), socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      let out = '';
      host.stdout!.setEncoding('utf8');
      while (!out.includes('serving on')) out += (await once(host.stdout!, 'data'))[0];
      const answers = execFileSync(process.execPath, [join(dir, 'examples', 'guest.mjs'), '--socket', socket, 'me', 'hello', 'there'], { encoding: 'utf8', timeout: 60_000 });
      expect(answers.trim().split('\n')).toEqual(['HELLO', 'THERE']);
    } finally {
      host.kill('SIGTERM');
      expect((await once(host, 'exit'))[0]).toBe(0);
    }
  }, 120_000);
});

describe('--build-from-source', () => {
  it('builds the addon in the installed package, and the loader takes that build', () => {
    const dir = project('from-source', ['--build-from-source']);
    expect(existsSync(join(dir, 'node_modules', 'ivshmem', 'build', 'Release', 'ivshmem.node'))).toBe(true);
    const info = execFileSync(join(dir, 'node_modules', '.bin', 'ivshmem'), ['info'], { cwd: dir, encoding: 'utf8' });
    expect(info).toContain(`native addon: ${join(dir, 'node_modules', 'ivshmem', 'build', 'Release', 'ivshmem.node')}`);
  }, 600_000);
});
