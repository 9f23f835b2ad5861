import { Buffer } from 'node:buffer';
import { abortError, fail, throwIfAborted } from '../errors.js';
import type { Codec } from './codec.js';
import { ChannelError, corrupt } from './errors.js';
import {
  isRingCapacity,
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MAX_CAPACITY,
  RING_MIN_CAPACITY,
  RING_VERSION_MAJOR,
  RING_VERSION_MINOR,
  ringCapacityFor,
  W_CAPACITY,
  W_FLAGS,
  W_HEAD_HI,
  W_HEAD_LO,
  W_HEADER_SIZE,
  W_MAGIC,
  W_TAIL_HI,
  W_TAIL_LO,
  W_VERSION,
} from './layout.js';
import type { WaitStrategy } from './wait.js';

// The ring header: where a ring sits in a region, formatting it, and attaching to it with every
// header field read once and validated. The ends' moving parts (positions, sleeping, waking)
// are ring.ts's.

/** Where a ring lives in a region. */
export interface RingPlacement {
  /** Byte offset of the ring in the region; a multiple of 8, best of 128 (default 0). */
  offset?: number;
  /** Bytes the ring may use from `offset` (default: to the end of the region). */
  size?: number;
}

/** Options of {@link formatRing}. */
export interface FormatOptions extends RingPlacement {
  /** Data-area bytes, a power of two (default: the largest that fits in `size`). */
  capacity?: number;
  /**
   * Starting value of head and tail, a multiple of 8 below 2^53 (default 0). Tests use it
   * to cross the 2^32 boundary of the low position word early.
   */
  position?: number;
}

/** Options both channel ends take. */
export interface ChannelOptions<T> extends RingPlacement {
  /** Turns values into payloads and back (default: {@link bytesCodec}). */
  codec?: Codec<T>;
  /** How this end sleeps and wakes the other (default: {@link pollingWaitStrategy}). */
  wait?: WaitStrategy;
  /**
   * Microseconds to busy-wait on the ring before sleeping (default 20; 0 never spins). A spin
   * that keeps failing shrinks itself, one that succeeds grows back. Spinning blocks this
   * thread's event loop for at most that long.
   */
  spin?: number;
  /** Format the ring first (exactly one end does, before the other attaches). */
  format?: boolean | Omit<FormatOptions, 'offset' | 'size'>;
}

/** Options of `ChannelReader.open` and `ChannelWriter.open`. */
export interface OpenOptions {
  /** Stops waiting for the ring to be formatted; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Milliseconds to wait for the formatting at most (default 10 000); then `ERR_IVSHMEM_TIMEOUT`. */
  timeout?: number;
}

/**
 * @internal Resolves once the ring at `options.offset` carries the magic (the formatter stores
 * it last), for an end that may attach before the other side formatted. Any other header
 * problem is the ring's, not the timing's: it rejects at once with the CORRUPT error.
 */
export async function whenFormatted(memory: ArrayBuffer, options: RingPlacement, wait: OpenOptions): Promise<void> {
  const timeout = wait.timeout ?? 10_000;
  if (!(timeout >= 0)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `open(): timeout must be a number of milliseconds >= 0, got ${String(wait.timeout)}`);
  const { offset, size } = placement(memory, options);
  if (size < RING_HEADER_SIZE) fail('ERR_IVSHMEM_SIZE', `channel: ${size} bytes cannot hold the ${RING_HEADER_SIZE}-byte ring header`);
  const header = new Uint32Array(memory, offset, RING_HEADER_SIZE / 4);
  const start = performance.now();
  for (let delay = 1; ; delay = Math.min(50, delay * 2)) {
    throwIfAborted(wait.signal);
    if (memory.byteLength === 0) fail('ERR_IVSHMEM_CLOSED', 'channel: the shared memory was unmapped (device closed) while waiting for the ring to be formatted');
    const magic = Atomics.load(header, W_MAGIC);
    if (magic === RING_MAGIC) return;
    if (performance.now() - start >= timeout) {
      throw new ChannelError(
        'ERR_IVSHMEM_TIMEOUT',
        `channel: the ring at offset ${offset} was not formatted within ${timeout} ms (magic is ${magic === 0 ? '0' : `0x${magic.toString(16)}`}): the other side formats it (format: true); is it running, and using the same offset?`,
      );
    }
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(done, delay);
      function done(): void {
        wait.signal?.removeEventListener('abort', aborted);
        resolve();
      }
      function aborted(): void {
        clearTimeout(timer);
        reject(abortError(wait.signal!.reason));
      }
      wait.signal?.addEventListener('abort', aborted, { once: true });
    });
  }
}

/** What a ring end learned when it attached: the validated geometry. @internal */
export interface Geometry {
  u32: Uint32Array;
  data: Buffer;
  capacity: number;
}

/** @internal The validated offset and size of a ring in `memory`. */
export function placement(memory: ArrayBuffer, options: RingPlacement): { offset: number; size: number } {
  const region: unknown = memory;
  if (!(region instanceof ArrayBuffer) && !(region instanceof SharedArrayBuffer)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'channel: memory must be an ArrayBuffer (a device\'s memory)');
  }
  const offset = options.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 8 !== 0) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: offset must be a non-negative multiple of 8, got ${String(offset)}`);
  }
  const size = options.size ?? memory.byteLength - offset;
  if (!Number.isSafeInteger(size) || size < 0 || offset + size > memory.byteLength) {
    fail(
      'ERR_IVSHMEM_INVALID_ARGUMENT',
      `channel: offset ${offset} + size ${String(size)} does not fit in the ${memory.byteLength}-byte region`,
    );
  }
  return { offset, size };
}

/**
 * Writes an empty ring's header at `options.offset`: the geometry, head = tail = `position`,
 * no flags, and the magic last so that a peer that sees the magic sees the rest. Returns the
 * data-area capacity. Only one end formats, before the other attaches.
 */
export function formatRing(memory: ArrayBuffer, options: FormatOptions = {}): number {
  const { offset, size } = placement(memory, options);
  const capacity = options.capacity ?? ringCapacityFor(size);
  if (!isRingCapacity(capacity) || RING_HEADER_SIZE + capacity > size) {
    fail(
      'ERR_IVSHMEM_SIZE',
      `formatRing(): ${size} bytes hold no ring with capacity ${String(capacity)}; the capacity is a power of two ${RING_MIN_CAPACITY}..${RING_MAX_CAPACITY} and the ring needs ${RING_HEADER_SIZE} more bytes`,
    );
  }
  const position = options.position ?? 0;
  if (!Number.isSafeInteger(position) || position < 0 || position % 8 !== 0) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `formatRing(): position must be a multiple of 8 below 2^53, got ${String(position)}`);
  }
  const u32 = new Uint32Array(memory, offset, RING_HEADER_SIZE / 4);
  Atomics.store(u32, W_MAGIC, 0);
  u32.fill(0, 1);
  u32[W_VERSION] = RING_VERSION_MAJOR | (RING_VERSION_MINOR << 16);
  u32[W_HEADER_SIZE] = RING_HEADER_SIZE;
  u32[W_CAPACITY] = capacity;
  const lo = position % 2 ** 32;
  const hi = Math.floor(position / 2 ** 32);
  u32[W_TAIL_HI] = hi;
  u32[W_TAIL_LO] = lo;
  u32[W_HEAD_HI] = hi;
  u32[W_HEAD_LO] = lo;
  Atomics.store(u32, W_MAGIC, RING_MAGIC);
  return capacity;
}

/** Reads and validates a ring header; every field is read once. @internal */
export function attachRing(memory: ArrayBuffer, options: ChannelOptions<unknown>): Geometry {
  const { offset, size } = placement(memory, options);
  if (options.format) formatRing(memory, { ...(typeof options.format === 'object' ? options.format : {}), offset, size });
  if (size < RING_HEADER_SIZE) fail('ERR_IVSHMEM_SIZE', `channel: ${size} bytes cannot hold the ${RING_HEADER_SIZE}-byte ring header`);
  const header = new Uint32Array(memory, offset, RING_HEADER_SIZE / 4);
  const error = checkHeader(header, Atomics.load(header, W_CAPACITY), size);
  if (error) throw error;
  const capacity = header[W_CAPACITY]!;
  // Re-check against the same value: the capacity cannot change between the check and its use.
  if (checkHeader(header, capacity, size)) throw corrupt('capacity', 'the header changed while it was being read');
  return {
    u32: new Uint32Array(memory, offset, (RING_HEADER_SIZE + capacity) / 4),
    data: Buffer.from(memory, offset + RING_HEADER_SIZE, capacity),
    capacity,
  };
}

/**
 * Validates the formatter's line against an expected capacity. Returns the error rather than
 * throwing, for the slow paths that re-check a live ring.
 * @internal
 */
export function checkHeader(u32: Uint32Array, capacity: number, size: number): ChannelError | null {
  const magic = Atomics.load(u32, W_MAGIC);
  if (magic !== RING_MAGIC) {
    return corrupt('magic', magic === 0 ? 'the ring is not formatted (magic is 0)' : `bad magic 0x${magic.toString(16)}`);
  }
  const version = u32[W_VERSION]!;
  if ((version & 0xffff) !== RING_VERSION_MAJOR) {
    return corrupt('version', `ring format version ${version & 0xffff}.${version >>> 16} is not supported (this is ${RING_VERSION_MAJOR}.${RING_VERSION_MINOR})`);
  }
  const headerSize = u32[W_HEADER_SIZE]!;
  if (headerSize !== RING_HEADER_SIZE) return corrupt('headerSize', `header size ${headerSize}, expected ${RING_HEADER_SIZE}`);
  const cap = u32[W_CAPACITY]!;
  if (cap !== capacity || !isRingCapacity(cap) || RING_HEADER_SIZE + cap > size) {
    return corrupt('capacity', `capacity ${cap} is not a power of two ${RING_MIN_CAPACITY}..${RING_MAX_CAPACITY} fitting the ${size}-byte ring${cap !== capacity ? ` (it was ${capacity})` : ''}`);
  }
  const flags = u32[W_FLAGS]!;
  if (flags !== 0) return corrupt('flags', `unknown flags 0x${flags.toString(16)}`);
  return null;
}
