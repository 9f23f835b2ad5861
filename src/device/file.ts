import { constants } from 'node:fs';
import { fail, withPath } from '../errors.js';
import { openNoFollow } from '../files.js';
import { native } from '../native.js';
import { DeviceBase } from './base.js';
import { checkMappable, mapRegion } from '../mapping.js';

/** Options of {@link openFile}. */
export interface OpenFileOptions {
  /**
   * Bytes to map. Defaults to the file's size. A new file (with `create`) is made this size;
   * an existing file must be at least this large.
   */
  size?: number;
  /**
   * Create the file if it does not exist (zero-filled, mode exactly 0600 whatever the umask), with
   * `size` bytes; an existing smaller file is grown to `size`. A symbolic link at `path` is
   * refused (`ERR_IVSHMEM_SYMLINK`), never followed.
   */
  create?: boolean;
  /** Map read-only. */
  readOnly?: boolean;
}

/**
 * A plain shared-memory file, such as `/dev/shm/NAME` or the file behind a QEMU
 * `memory-backend-file`: memory only, no doorbells and no interrupts.
 */
export class FileDevice extends DeviceBase {
  /** Always `'file'`. */
  readonly backend = 'file' as const;
  /** The mapped file. */
  readonly path: string;

  /** @internal */
  constructor(path: string, memory: ArrayBuffer) {
    super({ id: 0, memory, interruptFds: [] });
    this.path = path;
  }

  protected doorbell(): void {
    this.noDoorbell();
  }

  protected override noDoorbell(): never {
    fail('ERR_IVSHMEM_NO_DOORBELL', `No doorbell on a file-backed device ('${this.path}'): use connect() to a server or a guest device to ring peers.`);
  }

  protected override noInterrupts(): never {
    fail('ERR_IVSHMEM_NO_INTERRUPTS', `No interrupts on a file-backed device ('${this.path}'): poll the memory, or use connect() to a server or a guest device.`);
  }

  protected release(): void {}
}

/**
 * Maps a file as a {@link Device}.
 *
 * @example
 * ```ts
 * const dev = openFile('/dev/shm/demo', { size: 1 << 20, create: true });
 * new Uint8Array(dev.memory)[0] = 42; // seen by every process that maps the file
 * dev.close();
 * ```
 */
export function openFile(path: string, options: OpenFileOptions = {}): FileDevice {
  if (typeof path !== 'string' || path === '') fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'openFile(): path must be a non-empty string');
  const { size, create = false, readOnly = false } = options;
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `openFile('${path}'): size must be a positive integer number of bytes, got ${String(size)}`, { path });
  }
  if (size !== undefined) checkMappable(size, path);
  if (create && readOnly) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `openFile('${path}'): create and readOnly exclude each other`, { path });

  if (create && size === undefined) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `openFile('${path}'): create needs a size`, { path });
  const access = readOnly ? constants.O_RDONLY : constants.O_RDWR;
  // Creating (and so writing) never goes through a symlink; mapping an existing file by a link
  // the caller chose is the caller's business.
  const fd = create ? openNoFollow(path, { access, create }).fd : native.open(path, access);

  try {
    let fileSize = native.fstat(fd, path).size;
    // A file we just created, or one another process created a moment ago and has not sized
    // yet, grows to the asked size (zero-filled). Existing files are never shrunk.
    if (create && fileSize < size!) {
      native.ftruncate(fd, size!, path);
      fileSize = size!;
    }
    const length = size ?? fileSize;
    if (length === 0) fail('ERR_IVSHMEM_SIZE', `openFile('${path}'): the file is empty; pass a size with create: true`, { path });
    if (length > fileSize) {
      fail('ERR_IVSHMEM_SIZE', `openFile('${path}'): size ${length} is larger than the file (${fileSize} bytes)`, { path });
    }
    const memory = mapRegion(fd, 0, length, !readOnly, path);
    return new FileDevice(path, memory);
  } catch (error) {
    throw withPath(error, path);
  } finally {
    // The mapping keeps the file alive; the fd is no longer needed.
    native.close(fd);
  }
}
