// Whatever happens to the process that runs a lab, no QEMU, socket or shm file outlives it.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { beforeAll, describe, expect, it } from 'vitest';
import { sweepLeftovers } from '../../src/testing/leftovers.js';
import { prepareLab } from '../../src/testing/prepare.js';

interface Paths {
  dir: string;
  socket: string;
  shm: string;
  serverShm: string;
}

/** PIDs of processes whose command line mentions `text` (QEMU's mentions the lab folder). */
function processesWith(text: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(text)) pids.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

async function gone(text: string, timeoutMs = 5000): Promise<number[]> {
  const end = Date.now() + timeoutMs;
  let left = processesWith(text);
  while (left.length && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesWith(text);
  }
  return left;
}

async function runChild(mode: string): Promise<{ paths: Paths; qemuSeen: number; code: number | null; signal: NodeJS.Signals | null }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'lab-child.mjs'), mode], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const paths = JSON.parse(line) as Paths;
    const qemuSeen = processesWith(paths.dir).filter((pid) => pid !== child.pid).length;
    if (mode === 'signal') child.kill('SIGTERM');
    if (mode === 'kill') child.kill('SIGKILL');
    const [code, signal] = (child.exitCode !== null ? [child.exitCode, null] : await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    return { paths, qemuSeen, code, signal };
  } finally {
    child.kill('SIGKILL');
  }
}

// On a fresh machine the kernel is fetched here (or by the guest tests: one waits for the other).
beforeAll(async () => {
  await prepareLab({ onProgress: (line) => console.log(`[lab] ${line}`) });
}, 600_000);

describe('lab cleanup', () => {
  for (const [mode, expected] of [
    ['signal', { signal: 'SIGTERM' }],
    ['exit', { code: 3 }],
    ['throw', { code: 1 }],
  ] as const) {
    it(`removes QEMU, sockets and shm files when the process ends by ${mode}`, async () => {
      const { paths, qemuSeen, code, signal } = await runChild(mode);
      expect('signal' in expected ? signal : code).toBe('signal' in expected ? expected.signal : expected.code);
      expect(qemuSeen).toBeGreaterThan(0);
      expect(await gone(paths.dir)).toEqual([]);
      // The lab's server memory is a named file (shared with plain devices), so its absence means
      // something; a sealed memfd's /proc/PID/fd/N path would vanish with the process anyway.
      expect(paths.serverShm).toMatch(/^\/dev\/shm\//);
      for (const path of [paths.dir, paths.socket, paths.shm, paths.serverShm]) expect(existsSync(path), path).toBe(false);
    }, 60_000);
  }

  it('leaves nothing running after SIGKILL, and the next lab sweeps its files', async () => {
    const { paths, qemuSeen, signal } = await runChild('kill');
    expect(signal).toBe('SIGKILL');
    expect(qemuSeen).toBeGreaterThan(0);
    // QEMU runs under setpriv --pdeathsig: it dies with its parent even when no handler runs.
    expect(await gone(paths.dir)).toEqual([]);
    sweepLeftovers();
    for (const path of [paths.dir, paths.shm, paths.serverShm]) expect(existsSync(path), path).toBe(false);
  }, 60_000);
});
