// The server's shared memory: by default a memfd sealed against shrinking, growing and further
// seals, so that no peer can truncate it under the others (SIGBUS for everyone who mapped it);
// or a named file (`shm`), which cannot promise that: any process that can open it, and every
// peer it is handed to, can truncate it.
import { constants, rmSync } from 'node:fs';
import { fail, withPath, type IvshmemError } from '../errors.js';
import { openNoFollow } from '../files.js';
import { native } from '../native.js';

/** The memory a server hands to its peers. */
export interface ServerMemory {
  fd: number;
  /** The file behind it, or null for the sealed memfd. */
  path: string | null;
  /** Whether the server made the file (and removes it on close unless told to keep it). */
  created: boolean;
  /** Sealed against shrinking, growing and further seals. */
  sealed: boolean;
}

/** A new memfd of `size` zero bytes, sealed: the server's default memory. */
export function sealedMemory(size: number): ServerMemory {
  const fd = native.memfdCreateSealable('ivshmem');
  try {
    native.ftruncate(fd, size);
    native.addSeals(fd, native.seals.SHRINK | native.seals.GROW | native.seals.SEAL);
  } catch (error) {
    native.close(fd);
    throw error;
  }
  return { fd, path: null, created: true, sealed: true };
}

/**
 * The named file `path`, created with exactly `mode` (never through a symlink), or with `reuse`
 * an existing one whose contents are kept. It is grown to `size`, never shrunk.
 */
export function fileMemory(path: string, size: number, options: { reuse: boolean; mode: number }): ServerMemory {
  let opened: { fd: number; created: boolean };
  try {
    // Without reuse an existing file is never even opened (it might be a FIFO or a device).
    opened = openNoFollow(path, { access: constants.O_RDWR, create: true, exclusive: !options.reuse, mode: options.mode });
  } catch (error) {
    if ((error as IvshmemError).code === 'EEXIST') {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `shared memory '${path}' already exists: remove it, or pass reuseShm (--reuse-shm) to keep its contents`, { path });
    }
    throw withPath(error, path);
  }
  const { fd, created } = opened;
  try {
    const stat = native.fstat(fd, path);
    if ((stat.mode & constants.S_IFMT) !== constants.S_IFREG) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `shared memory '${path}' is not a regular file: give the path of a file (or none, for sealed memory)`, { path });
    }
    const existing = created ? 0 : stat.size;
    // Shrinking a file that others may have mapped would kill them with SIGBUS.
    if (existing > size) {
      fail('ERR_IVSHMEM_SIZE', `shared memory '${path}' is ${existing} bytes, larger than the ${size} asked for: reuse it with its own size (--size ${existing}) or remove it`, { path });
    }
    if (existing < size) native.ftruncate(fd, size, path);
  } catch (error) {
    native.close(fd);
    if (created) rmSync(path, { force: true });
    throw withPath(error as IvshmemError, path);
  }
  return { fd, path, created, sealed: false };
}
