// The names of what a lab leaves in /dev/shm and the temporary folder, and the sweep that
// removes what a killed lab (SIGKILL, a crash) left behind: the PID in each name tells whether
// its owner is gone.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alive } from './slots.js';

const SHM_PREFIX = 'ivshmem-lab-';
/** The prefix of a lab's folder in the temporary folder. */
export const DIR_PREFIX = 'ivshmem-lab-';

// The PID in the name lets a later lab remove what a killed one (SIGKILL) left.
/** A fresh shm path for this process's lab. */
export function shmName(tag: string): string {
  return `/dev/shm/${SHM_PREFIX}${process.pid}-${randomBytes(3).toString('hex')}-${tag.replace(/[^\w-]/g, '_')}`;
}

/**
 * Removes lab folders and shm files of processes that are gone: what a lab killed without
 * a chance to clean up (SIGKILL, a crash) leaves. Its QEMU processes died with it.
 */
export function sweepLeftovers(): void {
  for (const name of safeList('/dev/shm')) {
    const pid = Number(/^ivshmem-lab-(\d+)-/.exec(name)?.[1]);
    if (pid > 0 && !alive(pid)) rmSync(join('/dev/shm', name), { force: true });
  }
  for (const name of safeList(tmpdir())) {
    if (!name.startsWith(DIR_PREFIX) || name === 'ivshmem-lab-slots') continue;
    const dir = join(tmpdir(), name);
    const pid = Number(readFileSafe(join(dir, 'pid')));
    if (pid > 0 && !alive(pid)) rmSync(dir, { recursive: true, force: true });
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
