// The ring's wire format, version 1. SPEC.md ("Ring") is the normative text; these constants
// are its byte offsets, and the two must change together.
import { fail } from '../errors.js';

/** `"IVRG"` in memory order, read as a little-endian u32. */
export const RING_MAGIC = 0x47525649;
/** Major version: a reader refuses any other. */
export const RING_VERSION_MAJOR = 1;
/** Minor version: additions a version 1.0 reader may ignore (1.1: rules, no new fields). */
export const RING_VERSION_MINOR = 1;
/**
 * Bytes before the data area: five 128-byte lines (formatter; producer; producer's wait word;
 * consumer; consumer's wait word).
 */
export const RING_HEADER_SIZE = 640;
/** Smallest data area: a record header and one 8-byte payload word, with room to spare. */
export const RING_MIN_CAPACITY = 64;
/** Largest data area: positions are compared as 32-bit distances, so it must stay below 2^31. */
export const RING_MAX_CAPACITY = 2 ** 30;
/** Whether `capacity` is a data-area size a ring may have: a power of two, {@link RING_MIN_CAPACITY}..{@link RING_MAX_CAPACITY}. */
export function isRingCapacity(capacity: number): boolean {
  return Number.isInteger(capacity) && capacity >= RING_MIN_CAPACITY && capacity <= RING_MAX_CAPACITY && (capacity & (capacity - 1)) === 0;
}
/** Bytes of a record header: u32 length, u32 type. */
export const RECORD_HEADER_SIZE = 8;
/** Record type of a padding record, which fills the ring's end so no record wraps. */
export const RECORD_TYPE_PADDING = 0xffffffff;
/** Largest application record type; 0x10000..0xfffffffe are reserved in version 1. */
export const RECORD_TYPE_MAX = 0xffff;

/** Doorbells one ring end may send in a burst for the other end's wait word (SPEC 2.7). */
export const DOORBELL_BURST = 64;
/** Milliseconds per doorbell token after the burst: 20 µs, 50,000 doorbells per second (SPEC 2.7). */
export const DOORBELL_EVERY_MS = 0.02;

// u32 word indexes, relative to the ring's start.
/** @internal */ export const W_MAGIC = 0;
/** @internal */ export const W_VERSION = 1; // u16 major | u16 minor << 16
/** @internal */ export const W_HEADER_SIZE = 2;
/** @internal */ export const W_CAPACITY = 3;
/** @internal */ export const W_FLAGS = 4;
/** @internal */ export const W_TAIL_LO = 32; // byte 128: producer line
/** @internal */ export const W_TAIL_HI = 33;
/** @internal */ export const W_WRITER_CLOSED = 34;
// The wait words sit alone on their lines: the peer loads the other end's wait word after every
// publish, and a line shared with the busy head or tail would miss in its cache every time.
/** @internal */ export const W_PRODUCER_WAIT = 64; // byte 256
/** @internal */ export const W_HEAD_LO = 96; // byte 384: consumer line
/** @internal */ export const W_HEAD_HI = 97;
/** @internal */ export const W_READER_CLOSED = 98;
/** @internal */ export const W_CONSUMER_WAIT = 128; // byte 512
/** @internal */ export const W_DATA = RING_HEADER_SIZE / 4; // byte 640: data area

/** Bytes a ring with a `capacity`-byte data area occupies; `capacity` is a power of two from 64 to 2^30. */
export function ringSize(capacity: number): number {
  if (!isRingCapacity(capacity)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ringSize(): capacity must be a power of two from ${RING_MIN_CAPACITY} to 2^30 bytes, got ${String(capacity)}`);
  }
  return RING_HEADER_SIZE + capacity;
}

/** The largest power-of-two data area that fits in `size` bytes (0 when none fits). */
export function ringCapacityFor(size: number): number {
  const room = Math.min(size - RING_HEADER_SIZE, RING_MAX_CAPACITY);
  if (!(room >= RING_MIN_CAPACITY)) return 0;
  return 2 ** Math.floor(Math.log2(room));
}

/** Bytes one record with a `length`-byte payload takes in the data area (header + payload, 8-aligned). */
export function recordSize(length: number): number {
  return RECORD_HEADER_SIZE + Math.ceil(length / 8) * 8;
}
