// Locks shared by every process on the host, as flock(2) locks on files: the kernel releases a
// lock when its holder closes it or dies, so no lock is ever left behind and no PID is trusted.
// Guest slots: TCG guests are CPU-bound, and test files run in parallel processes, so an
// in-process limit alone would still boot too many at once. Preparation: two processes must
// not download the same kernel side by side.
import { chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLockFile } from '../native.js';
import { LabError } from './errors.js';
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
  const release = tryLockFile(path);
  return release && onCleanup(release);
}

/**
 * Waits until `count` of the host's `max` guest slots are free and takes them. A request for
 * more than `max` waits for all of them. Returns the release function.
 */
export async function acquireSlots(count: number, max: number, signal?: AbortSignal): Promise<() => void> {
  mkdirSync(DIR, { recursive: true });
  try {
    // Shared by every user's tests (mkdir's mode is cut by the umask).
    chmodSync(DIR, 0o1777);
  } catch {
    // Somebody else's directory: it is theirs to set.
  }
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

/** Waits (at most `timeoutMs`) for the lock file at `path`, runs `fn`, and releases the lock. */
export async function withLock<T>(path: string, fn: () => Promise<T>, timeoutMs = 15 * 60_000): Promise<T> {
  let release: (() => void) | null;
  const deadline = Date.now() + timeoutMs;
  while (!(release = tryLock(path))) {
    if (Date.now() > deadline) throw new LabError(`another process has held ${path} for over ${Math.round(timeoutMs / 1000)} s`);
    await sleep(250);
  }
  try {
    return await fn();
  } finally {
    release();
  }
}
