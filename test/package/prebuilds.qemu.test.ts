// The prebuilds `npm pack` ships: one per architecture, each really working on its architecture.
// The arm64 one runs under qemu-user with Debian's arm64 node (scripts/arm64-node.sh): bookworm's
// Node 18.20.4, below engines' >=20.19. That is the arm64 Node at hand; the test proves the N-API
// prebuild loads and works on arm64 (N-API is stable across these versions), not that the
// package supports Node 18.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { shmPath } from '../helpers.js';
import { elfMachine, ensurePrebuilds, prebuildPath, root } from './prebuilds.js';

beforeAll(() => ensurePrebuilds(), 600_000);

describe('prebuilds', () => {
  it('are built for x86-64 and AArch64', () => {
    expect(elfMachine(readFileSync(prebuildPath('x64')))).toBe(62);
    expect(elfMachine(readFileSync(prebuildPath('arm64')))).toBe(183);
    // The unit project's consumer test builds only x64: the tarball's arm64 member is checked here.
    const [info] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }));
    expect(info.files.map((f: { path: string }) => f.path)).toContain('prebuilds/linux-arm64/ivshmem.glibc.node');
  });

  it('the linux-arm64 one maps a file, drives an eventfd and carries a channel message under an arm64 node', () => {
    const sysroot = execFileSync('bash', [join(root, 'scripts', 'arm64-node.sh')], { encoding: 'utf8' }).trim();
    const shm = shmPath('arm64');
    try {
      const out = execFileSync('qemu-aarch64-static', ['-L', sysroot, join(sysroot, 'usr', 'bin', 'node'), join(root, 'test', 'fixtures', 'arm64-smoke.mjs'), root, shm], {
        encoding: 'utf8',
        timeout: 240_000,
      });
      expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({
        arch: 'arm64',
        nativePath: prebuildPath('arm64'),
        shared: 42,
        drained: 7,
        received: 'hello from arm64',
        receivedSync: 'sync',
        blockingWait: 'ERR_IVSHMEM_TIMEOUT',
      });
    } finally {
      rmSync(shm, { force: true });
    }
  }, 300_000);
});
