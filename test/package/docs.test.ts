// The API reference builds with TypeDoc with no warning (every exported member documented, every
// link resolved), names its modules as users import them and files declarations by category.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { root } from './prebuilds.js';

const out = mkdtempSync(join(tmpdir(), 'ivshmem-docs-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

it('typedoc: 0 warnings with notDocumented validation, modules named as imported, categories', async () => {
  const typedoc = join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');
  // typedoc.json sets treatWarningsAsErrors: any warning fails the run.
  const { stdout } = await promisify(execFile)(process.execPath, [typedoc, '--out', out, '--json', join(out, 'api.json')], { cwd: root, encoding: 'utf8' });
  expect(stdout).not.toMatch(/warning/);
  const api = JSON.parse(readFileSync(join(out, 'api.json'), 'utf8')) as {
    children: Array<{ name: string; categories?: Array<{ title: string }> }>;
  };
  expect(api.children.map((m) => m.name).sort()).toEqual(['ivshmem', 'ivshmem/spec', 'ivshmem/testing']);
  const categories = (name: string): string[] => api.children.find((m) => m.name === name)!.categories!.map((c) => c.title);
  expect(categories('ivshmem')).toEqual(['Devices', 'Server', 'Channels', 'Bus', 'Errors']);
  expect(categories('ivshmem/testing')).toEqual(['Lab']);
}, 300_000);
