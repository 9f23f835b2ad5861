/**
 * The one error class of the library. System call failures carry `errno`, `syscall` and, when
 * the call was about a file or socket, its `path`; library failures carry an `ERR_IVSHMEM_*`
 * code.
 */
export class IvshmemError extends Error {
  /** `ENOENT`, `EACCES`, … for system calls; `ERR_IVSHMEM_*` for the library's own checks. */
  readonly code: string;
  /** The positive errno value, for system call failures. */
  readonly errno?: number;
  /** The system call that failed (`open`, `mmap`, …). */
  readonly syscall?: string;
  /** The file, device or socket the failing call was about. */
  readonly path?: string;

  constructor(
    message: string,
    props: { code: string; errno?: number; syscall?: string; path?: string; cause?: unknown },
  ) {
    super(message, props.cause === undefined ? undefined : { cause: props.cause });
    this.name = 'IvshmemError';
    this.code = props.code;
    if (props.errno !== undefined) this.errno = props.errno;
    if (props.syscall !== undefined) this.syscall = props.syscall;
    if (props.path !== undefined) this.path = props.path;
  }
}

/** Library error codes (system call failures use the errno name instead). */
export type IvshmemErrorCode =
  | 'ERR_IVSHMEM_CLOSED'
  | 'ERR_IVSHMEM_NATIVE'
  | 'ERR_IVSHMEM_INVALID_ARGUMENT'
  | 'ERR_IVSHMEM_NO_DOORBELL'
  | 'ERR_IVSHMEM_NO_INTERRUPTS'
  | 'ERR_IVSHMEM_PROTOCOL'
  | 'ERR_IVSHMEM_SIZE'
  | 'ERR_IVSHMEM_REGION'
  | 'ERR_IVSHMEM_REGION_VERSION'
  | 'ERR_IVSHMEM_BUS_FULL'
  | 'ERR_IVSHMEM_PEER_GONE'
  | 'ERR_IVSHMEM_EVICTED'
  | 'ERR_IVSHMEM_DECODE'
  | 'ERR_IVSHMEM_NO_DEVICE'
  | 'ERR_IVSHMEM_NO_IOMMU'
  | 'ERR_IVSHMEM_DEVICE_BUSY'
  | 'ERR_IVSHMEM_NO_VFIO'
  | 'ERR_IVSHMEM_CHANNEL_CORRUPT' | 'ERR_IVSHMEM_CHANNEL_CLOSED' | 'ERR_IVSHMEM_CHANNEL_BUSY' | 'ERR_IVSHMEM_MESSAGE_TOO_LARGE';

/** Throws an {@link IvshmemError} with a library code. */
export function fail(code: IvshmemErrorCode, message: string, extra: { path?: string; cause?: unknown } = {}): never {
  throw new IvshmemError(message, { code, ...extra });
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
