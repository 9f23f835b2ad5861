import { constants } from 'node:buffer';
import { fail, withPath } from './errors.js';
import { native, type Native } from './native.js';

/**
 * The largest shared-memory region, in bytes, the library maps: the most Node.js can hand to
 * JavaScript as one external ArrayBuffer (`buffer.constants.MAX_LENGTH`). On Node.js 20 that is
 * 4 GiB (2^32 bytes); later Node.js versions allow more. A larger device, file or server region
 * is refused with `ERR_IVSHMEM_SIZE` before anything is mapped.
 */
export const maxMappingSize: number = constants.MAX_LENGTH;

/**
 * The one door to mmap for every backend: a region larger than {@link maxMappingSize} is a typed
 * error before the kernel is asked, so no backend meets the addon's limit by surprise.
 * `what` names the region in the error (a path, a PCI address or a socket); `calls` is the addon,
 * or what a backend was given in its place.
 */
export function mapRegion(fd: number, offset: number, size: number, writable: boolean, what: string, calls: Pick<Native, 'map'> = native): ArrayBuffer {
  checkMappable(size, what);
  try {
    return calls.map(fd, offset, size, writable, what);
  } catch (error) {
    throw withPath(error, what);
  }
}

/** Throws `ERR_IVSHMEM_SIZE` for a size the library will not map. */
export function checkMappable(size: number, what: string): void {
  if (size > maxMappingSize) {
    fail(
      'ERR_IVSHMEM_SIZE',
      `${what}: the region is ${size} bytes, more than this Node.js can map as one ArrayBuffer (${maxMappingSize} bytes); use a smaller region`,
      { path: what },
    );
  }
}
