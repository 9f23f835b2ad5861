import { constants } from 'node:os';

/** The name of an errno (`ENOENT`, `EACCES`, …): the code of a failed system call. */
export type ErrnoCode = keyof typeof constants.errno | ExtraErrnoCode;

/**
 * Errno names the addon can report that Node's `os.constants.errno` lacks (Linux values):
 * `ETOOMANYREFS` is sendmsg's answer when a non-root sender's fds in flight pass its fd limit.
 */
export type ExtraErrnoCode = keyof typeof EXTRA_ERRNO;
const EXTRA_ERRNO = { ETOOMANYREFS: 109 } as const;

/**
 * The library's own failure codes. Each names what went wrong, never how; the troubleshooting
 * guide (docs/troubleshooting.md) says what to do about each.
 */
export type IvshmemLibraryCode =
  /** The device, bus, channel or lab was closed. */
  | 'ERR_IVSHMEM_CLOSED'
  /** The native addon could not be loaded. */
  | 'ERR_IVSHMEM_NATIVE'
  /** An argument (or a command-line option) is out of range or of the wrong type. */
  | 'ERR_IVSHMEM_INVALID_ARGUMENT'
  /** `ring()` on a device without doorbells. */
  | 'ERR_IVSHMEM_NO_DOORBELL'
  /** Waiting for interrupts on a device that delivers none. */
  | 'ERR_IVSHMEM_NO_INTERRUPTS'
  /** The ivshmem-server (or one of its clients) broke the protocol. */
  | 'ERR_IVSHMEM_PROTOCOL'
  /** Something awaited did not come in time: a protocol answer, a blocking channel call's record or space, a ring's formatting. */
  | 'ERR_IVSHMEM_TIMEOUT'
  /** Another server already listens on the socket path. */
  | 'ERR_IVSHMEM_ADDRESS_IN_USE'
  /** A size does not fit (a file, a region, a BAR). */
  | 'ERR_IVSHMEM_SIZE'
  /** A path the library would create or write is a symbolic link: refused, never followed. */
  | 'ERR_IVSHMEM_SYMLINK'
  /** The server's shared memory is not sealed against shrinking (and `sealedMemory: 'require'`). */
  | 'ERR_IVSHMEM_UNSEALED_MEMORY'
  /** The shared memory is not a bus region, or its superblock is corrupt. */
  | 'ERR_IVSHMEM_REGION'
  /** The region was formatted by another major version of the layout. */
  | 'ERR_IVSHMEM_REGION_VERSION'
  /** Every peer slot, channel entry or the ring space of a section is taken. */
  | 'ERR_IVSHMEM_BUS_FULL'
  /** The peer at the other end is down. */
  | 'ERR_IVSHMEM_PEER_GONE'
  /** The other peers declared this one dead and freed its slot. */
  | 'ERR_IVSHMEM_EVICTED'
  /** A reader's codec could not decode a record. */
  | 'ERR_IVSHMEM_DECODE'
  /** No ivshmem PCI device at that address. */
  | 'ERR_IVSHMEM_NO_DEVICE'
  /** The device has no IOMMU group, so VFIO cannot take it. */
  | 'ERR_IVSHMEM_NO_IOMMU'
  /** Another driver or process holds the device. */
  | 'ERR_IVSHMEM_DEVICE_BUSY'
  /** vfio-pci is not available. */
  | 'ERR_IVSHMEM_NO_VFIO'
  /** The other end of a channel broke the ring's rules. */
  | 'ERR_IVSHMEM_CHANNEL_CORRUPT'
  /** A channel's other end (or this one) closed. */
  | 'ERR_IVSHMEM_CHANNEL_CLOSED'
  /** A channel's writer closed it with an error (writer-closed = 2): the data before it is all there is. */
  | 'ERR_IVSHMEM_CHANNEL_ABORTED'
  /** A channel end is in use by another call that excludes this one. */
  | 'ERR_IVSHMEM_CHANNEL_BUSY'
  /** A message can never fit in the ring. */
  | 'ERR_IVSHMEM_MESSAGE_TOO_LARGE'
  /** The QEMU lab failed: a missing tool, a failed preparation step, a guest that did not start. */
  | 'ERR_IVSHMEM_LAB';

/**
 * Every code an {@link IvshmemError} carries: an errno name when a system call failed (and then
 * `errno` and `syscall` are set), an `ERR_IVSHMEM_*` code otherwise.
 */
export type IvshmemErrorCode = IvshmemLibraryCode | ErrnoCode;

/** What an error carries besides its code and message. */
export interface IvshmemErrorProps {
  /** The positive errno value (system call failures only). */
  errno?: number;
  /** The system call that failed. */
  syscall?: string;
  /** The file, device or socket the failure was about. */
  path?: string;
  cause?: unknown;
}

/**
 * The one error class of the library. System call failures carry `errno`, `syscall` and, when
 * the call was about a file or socket, its `path`; library failures carry an `ERR_IVSHMEM_*`
 * code. Make them with `ivshmemError()` (or `fail()`); the native addon makes its own.
 */
export class IvshmemError extends Error {
  /** `ENOENT`, `EACCES`, … for system calls; `ERR_IVSHMEM_*` for the library's own checks. */
  readonly code: IvshmemErrorCode;
  /** The positive errno value, for system call failures. */
  readonly errno?: number;
  /** The system call that failed (`open`, `mmap`, …). */
  readonly syscall?: string;
  /** The file, device or socket the failing call was about. */
  readonly path?: string;

  constructor(message: string, props: IvshmemErrorProps & { code: IvshmemErrorCode }) {
    super(message, props.cause === undefined ? undefined : { cause: props.cause });
    this.name = 'IvshmemError';
    this.code = props.code;
    if (props.errno !== undefined) this.errno = props.errno;
    if (props.syscall !== undefined) this.syscall = props.syscall;
    if (props.path !== undefined) this.path = props.path;
  }
}

function isErrno(code: IvshmemErrorCode): code is ErrnoCode {
  return Object.hasOwn(constants.errno, code) || Object.hasOwn(EXTRA_ERRNO, code);
}

function errnoNumber(code: ErrnoCode): number {
  return Object.hasOwn(EXTRA_ERRNO, code) ? EXTRA_ERRNO[code as ExtraErrnoCode] : constants.errno[code as keyof typeof constants.errno];
}

/**
 * The one way the library makes an error. An errno code gets its `errno` number filled in, so an
 * errno name is only ever a code where there is an errno.
 */
export function ivshmemError(code: IvshmemErrorCode, message: string, props: IvshmemErrorProps = {}): IvshmemError {
  const errno = props.errno ?? (isErrno(code) ? errnoNumber(code) : undefined);
  return new IvshmemError(message, { ...props, code, ...(errno === undefined ? {} : { errno }) });
}

/** Throws `ivshmemError(code, message, props)`. */
export function fail(code: IvshmemErrorCode, message: string, props: IvshmemErrorProps = {}): never {
  throw ivshmemError(code, message, props);
}

/** The same error, with the path filled in when the native layer did not know it. */
export function withPath(error: unknown, path: string): unknown {
  if (error instanceof IvshmemError && error.path === undefined) {
    return new IvshmemError(`${error.message} '${path}'`, {
      code: error.code,
      errno: error.errno,
      syscall: error.syscall,
      path,
    });
  }
  return error;
}

/**
 * What a call whose `signal` was aborted rejects with, as Node's own APIs do: `name`
 * `'AbortError'`, `code` `'ABORT_ERR'`, and the signal's reason as `cause`.
 */
export class AbortError extends Error {
  /** `'ABORT_ERR'`, as Node's own AbortError has. */
  readonly code = 'ABORT_ERR' as const;

  constructor(reason: unknown) {
    const detail = reason instanceof Error && reason.name !== 'AbortError' ? `: ${reason.message}` : '';
    super(`The operation was aborted${detail}`, { cause: reason });
    this.name = 'AbortError';
  }
}

/**
 * The rejection for an abort with `reason`. The library aborts its own waits with its typed
 * errors (a channel or bus that closed or failed): those pass through unchanged.
 */
export function abortError(reason: unknown): unknown {
  return reason instanceof IvshmemError || reason instanceof AbortError ? reason : new AbortError(reason);
}

/** `signal.throwIfAborted()`, throwing {@link abortError}`(signal.reason)`. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal.reason);
}
