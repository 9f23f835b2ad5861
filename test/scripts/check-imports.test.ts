// The import rule's checker, on small trees written for the purpose and on the real src/.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', '..', 'scripts', 'check-imports.mjs');
const made: string[] = [];
afterEach(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const src = join(mkdtempSync(join(tmpdir(), 'ivshmem-imports-')), 'src');
  made.push(dirname(src));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(src, path)), { recursive: true });
    writeFileSync(join(src, path), text);
  }
  return src;
}

function check(src: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [script, src], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

const good = {
  'errors.ts': 'export const x = 1;\n',
  'index.ts': "export { ring } from './channel/index.js';\n",
  'channel/index.ts': "export { ring } from './ring.js';\n",
  'channel/ring.ts': "import { x } from '../errors.js';\nexport const ring = x;\n",
  'bus/index.ts': "import { ring } from '../channel/index.js';\nexport const bus = ring;\n",
};

describe('check-imports', () => {
  it('accepts imports through doors, downwards', () => {
    expect(check(tree(good))).toMatchObject({ status: 0 });
  });

  it('refuses an import that reaches past another folder’s index.ts', () => {
    const r = check(tree({ ...good, 'bus/index.ts': "import { ring } from '../channel/ring.js';\nexport const bus = ring;\n" }));
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/bus\/index\.ts: '\.\.\/channel\/ring\.js': reaches past channel\/index\.ts/);
  });

  it('refuses an upward import, also a type-only or dynamic one', () => {
    const r = check(
      tree({
        ...good,
        'channel/ring.ts': "import type { bus } from '../bus/index.js';\nexport const ring = 1;\nvoid import('../bus/index.js');\n",
      }),
    );
    expect(r.status).toBe(1);
    expect(r.output.match(/channel may import only device: bus\/ is not below it/g)).toHaveLength(2);
  });

  it('refuses the package door inside src/ and a folder with no layer', () => {
    const r = check(tree({ ...good, 'bus/x.ts': "import { ring } from '../index.js';\n", 'extra/index.ts': "export * from '../channel/index.js';\n" }));
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/src\/index\.ts is the package's door/);
    expect(r.output).toMatch(/extra\/ has no place in LAYERS/);
  });

  it('passes on this repository’s src/', () => {
    expect(() => execFileSync(process.execPath, [script], { encoding: 'utf8' })).not.toThrow();
  });
});
