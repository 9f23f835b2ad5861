// Files the library creates or rewrites (shared-memory files, the server's memory): never through
// a symbolic link, and with exact permission bits whatever the umask.
import { constants, lstatSync } from 'node:fs';
import { fail, type IvshmemError } from './errors.js';
import { native } from './native.js';

/** Permission bits of what the library creates unless told otherwise: owner read and write. */
export const OWNER_ONLY = 0o600;

/** Checks a `mode` option: permission bits 0..0o777. */
export function checkMode(mode: unknown, what: string): number {
  if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what}: mode must be permission bits 0..0o777 (such as 0o600 or 0o660), got ${typeof mode === 'number' ? `0o${mode.toString(8)}` : String(mode)}`);
  }
  return mode;
}

/**
 * Opens `path` without following a symlink in its last component (a link planted there would make
 * us write another file); with `create`, creates it only if it does not exist (O_EXCL), with
 * exactly `mode`, and with `exclusive` never opens an existing one (EEXIST). A symlink is
 * `ERR_IVSHMEM_SYMLINK`.
 */
export function openNoFollow(path: string, options: { access: number; create?: boolean; exclusive?: boolean; mode?: number }): { fd: number; created: boolean } {
  const { access, create = false, exclusive = false, mode = OWNER_ONLY } = options;
  if (create) {
    let fd = -1;
    try {
      fd = native.open(path, access | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    } catch (error) {
      if ((error as IvshmemError).code !== 'EEXIST') throw error;
      if (exclusive) {
        if (isSymlink(path)) symlinkRefused(path, error);
        throw error;
      }
    }
    if (fd >= 0) {
      try {
        // The umask took bits away at creation: put back exactly what was asked for.
        native.fchmod(fd, mode, path);
      } catch (error) {
        native.close(fd);
        throw error;
      }
      return { fd, created: true };
    }
  }
  try {
    return { fd: native.open(path, access | constants.O_NOFOLLOW), created: false };
  } catch (error) {
    if ((error as IvshmemError).code === 'ELOOP') symlinkRefused(path, error);
    throw error;
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function symlinkRefused(path: string, cause: unknown): never {
  fail('ERR_IVSHMEM_SYMLINK', `'${path}' is a symbolic link: refusing to follow it (a link planted there would make us write another file). Remove it, or give the real path.`, { path, cause });
}
