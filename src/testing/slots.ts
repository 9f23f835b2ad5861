// Locks shared by every process on the host, as files holding the owner's PID (a dead owner's
// lock is free). Guest slots: TCG guests are CPU-bound, and test files run in parallel
// processes, so an in-process limit alone would still boot too many at once. Preparation: two
// processes must not download the same kernel side by side.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { onCleanup } from './cleanup.js';

const DIR = join(tmpdir(), 'ivshmem-lab-slots');

/** True while process `pid` exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lock file at `path` if it is free; returns its release function, or null. */
export function tryLock(path: string): (() => void) | null {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return onCleanup(() => rmSync(path, { force: true }));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(readFileSafe(path));
      // Empty: its owner is between creating and writing it, unless that was long ago.
      if (!(owner > 0) && Date.now() - mtime(path) < 5000) return null;
      // A slot left by a process that died is free.
      if (owner > 0 && alive(owner)) return null;
      rmSync(path, { force: true });
    }
  }
  return null;
}

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Waits until `count` of the host's `max` guest slots are free and takes them. A request for
 * more than `max` waits for all of them. Returns the release function.
 */
export async function acquireSlots(count: number, max: number, signal?: AbortSignal): Promise<() => void> {
  mkdirSync(DIR, { recursive: true, mode: 0o1777 });
  const want = Math.min(count, max);
  for (;;) {
    signal?.throwIfAborted();
    const taken: Array<() => void> = [];
    for (let slot = 0; slot < max && taken.length < want; slot++) {
      const release = tryLock(join(DIR, `slot-${slot}`));
      if (release) taken.push(release);
    }
    if (taken.length === want) return () => taken.forEach((release) => release());
    taken.forEach((release) => release());
    await sleep(150 + Math.random() * 200);
  }
}

/** Waits for the lock file at `path`, runs `fn`, and releases the lock. */
export async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  let release: (() => void) | null;
  while (!(release = tryLock(path))) await sleep(250);
  try {
    return await fn();
  } finally {
    release();
  }
}
