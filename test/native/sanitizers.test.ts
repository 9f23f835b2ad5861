// The native tests again, with the addon built under AddressSanitizer and UndefinedBehaviorSanitizer
// (scripts/build-sanitized.mjs): an out-of-bounds access, use-after-free, double free or
// undefined conversion in the addon fails here even where the normal build happens to survive it.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain script without types
import { buildSanitized, sanitizerEnv } from '../../scripts/build-sanitized.mjs';

const root = join(import.meta.dirname, '..', '..');
// The run-to-completion tests drive native/wait.cc (waitWord) through every path it has.
const nativeTests = ['test/native/native.test.ts', 'test/device/file.test.ts', 'test/native/large-mapping.test.ts', 'test/channel/run-to-completion.test.ts'];
const sanitizerReport = /ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer/;

let addon: string;
beforeAll(() => {
  addon = buildSanitized() as string;
}, 300_000);

describe('the addon under ASan and UBSan', () => {
  it('is the one a process loads when IVSHMEM_ADDON points at it, with the runtime preloaded', () => {
    const probe = `import('./dist/native.js').then((m) => console.log(JSON.stringify({
      path: m.nativePath(),
      asan: require('node:fs').readFileSync('/proc/self/maps', 'utf8').includes('libasan'),
    })))`;
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: root, env: sanitizerEnv(), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ path: addon, asan: true });
  });

  it('passes the native, file-device and large-region tests without a sanitizer report', () => {
    const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
    const r = spawnSync(process.execPath, [vitest, 'run', ...nativeTests], { cwd: root, env: sanitizerEnv(), encoding: 'utf8' });
    const output = `${r.stdout}\n${r.stderr}`;
    expect(output).not.toMatch(sanitizerReport);
    expect(r.status, output.slice(-4000)).toBe(0);
  }, 240_000);
});
