import { fork, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/** A fresh path under /dev/shm for one test. */
export function shmPath(tag: string): string {
  return `/dev/shm/ivshmem-test-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Open fds of this process: a leak shows as a difference. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export const fixtures = join(import.meta.dirname, 'fixtures');

/** Forks a fixture script with an IPC channel. */
export function child(script: string, args: string[] = [], options: { uid?: number } = {}): ChildProcess {
  return fork(join(fixtures, script), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...options });
}

/** The next IPC message from a child. */
export async function message<T = unknown>(proc: ChildProcess): Promise<T> {
  const [msg] = await once(proc, 'message');
  return msg as T;
}

/** Waits for a child's exit and returns its code. */
export async function exitCode(proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode !== null) return proc.exitCode;
  const [code] = await once(proc, 'exit');
  return code as number | null;
}
