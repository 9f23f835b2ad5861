// Host-wide lab locks (flock): one holder at a time across processes, and a killed holder's
// lock is free at once, whatever PID comes next.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tryLock } from '../../src/testing/slots.js';

const slots = join(import.meta.dirname, '..', '..', 'dist', 'testing', 'slots.js');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// A process that tries the lock once, says whether it got it, and holds it until killed.
function contender(path: string) {
  const code = `import('${slots}').then(({ tryLock }) => { const r = tryLock('${path}'); console.log(r ? 'held' : 'busy'); setInterval(() => {}, 1000); });`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const answer = new Promise<string>((resolve) => proc.stdout.once('data', (d) => resolve(String(d).trim())));
  return { proc, answer };
}

describe('lab locks', () => {
  it('let exactly one of several racing processes hold a lock, and free it when the holder is killed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ivshmem-locks-'));
    dirs.push(dir);
    const path = join(dir, 'slot-0');
    for (let round = 0; round < 5; round++) {
      const racers = Array.from({ length: 4 }, () => contender(path));
      const answers = await Promise.all(racers.map((r) => r.answer));
      expect(answers.filter((a) => a === 'held')).toHaveLength(1);
      // In this process too the lock is taken.
      expect(tryLock(path)).toBeNull();
      for (const r of racers) r.proc.kill('SIGKILL');
      await Promise.all(racers.map((r) => once(r.proc, 'exit')));
    }
    // Every holder was killed: the lock is free, with no stale file to trust or remove.
    const release = tryLock(path);
    expect(release).not.toBeNull();
    release!();
  });
});
