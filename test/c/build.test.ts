// The C library's own suite, run by the project's test command: its unit tests and the ring
// fuzz, both under AddressSanitizer and UndefinedBehaviorSanitizer (a finding aborts the
// program: a non-zero exit fails the test), and the README's C example, compiled and run.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildC, cDir } from './c-lib.js';

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

describe('the C library', () => {
  it('builds warning-free and passes its unit tests under ASan/UBSan', () => {
    buildC('all');
    buildC('build/unit');
    const out = run(join(cDir, 'build', 'unit'), []);
    console.log(out.trim());
    expect(out).toMatch(/, 0 failed$/m);
  }, 120_000);

  it('the ring fuzz finds nothing under ASan/UBSan and hits every corruption rule', () => {
    buildC('build/fuzz');
    const out = run(join(cDir, 'build', 'fuzz'), [process.env.C_FUZZ_STATES ?? '500000']);
    console.log(out.trim());
    expect(out).toMatch(/corrupt: magic [1-9]/);
  }, 120_000);

  it("the README's C example compiles against the header and the library, and runs", () => {
    buildC('all');
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const example = /<!-- c-example -->\s*```c\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example, 'README.md has a ```c block after <!-- c-example -->').toBeTruthy();
    const source = join(cDir, 'build', `readme-example-${process.pid}.c`);
    const binary = source.replace(/\.c$/, '');
    writeFileSync(source, example!);
    try {
      run('cc', ['-std=c11', '-Wall', '-Wextra', '-Werror', `-I${join(cDir, 'include')}`, `-I${join(cDir, 'glue')}`, source, join(cDir, 'build', 'libivshmem.a'), '-o', binary]);
      const shm = `/dev/shm/ivshmem-test-readme-${process.pid}`;
      const out = run(binary, [shm]);
      rmSync(shm, { force: true });
      expect(out).toBe('hello from C\n');
    } finally {
      rmSync(source, { force: true });
      rmSync(binary, { force: true });
    }
  }, 60_000);
});
