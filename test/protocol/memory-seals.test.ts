// The client's check of the server's memory, against a server that changes the memory while it
// is being checked.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const victim = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'seal-race-victim.mjs');

describe('checkServerMemory', () => {
  it('reads the seals before the size: a shrink-and-seal in between cannot make us map past the end (SIGBUS before the fix)', () => {
    const run = spawnSync(process.execPath, [victim], { encoding: 'utf8' });
    expect({ status: run.status, signal: run.signal, stderr: run.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(JSON.parse(run.stdout)).toEqual({ size: 4096 });
  });
});
