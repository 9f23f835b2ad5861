import {
  W_CAPACITY,
  W_CONSUMER_WAIT,
  W_DATA,
  W_FLAGS,
  W_HEAD_LO,
  W_HEADER_SIZE,
  W_MAGIC,
  W_PRODUCER_WAIT,
  W_READER_CLOSED,
  W_TAIL_LO,
  W_VERSION,
  W_WRITER_CLOSED,
} from './layout.js';

/**
 * Byte offsets of the ring header's fields from the ring's start (SPEC.md, "Ring"), for other
 * implementations of the format. `tail` and `head` are little-endian u64s, the rest u32s.
 */
export const RING_FIELDS = Object.freeze({
  /** `0x47525649` ("IVRG" in memory). */
  magic: W_MAGIC * 4,
  /** Major version (u16), then minor (u16). */
  version: W_VERSION * 4,
  /** 640. */
  headerSize: W_HEADER_SIZE * 4,
  /** Data-area bytes: a power of two, 64..2^30. */
  capacity: W_CAPACITY * 4,
  /** 0: no flags are defined in version 1. */
  flags: W_FLAGS * 4,
  /** The producer's position, low word (the high word follows). */
  tail: W_TAIL_LO * 4,
  /** 1 once the producer closed (end of stream). */
  writerClosed: W_WRITER_CLOSED * 4,
  /** Odd while the producer sleeps until space is freed. */
  producerWait: W_PRODUCER_WAIT * 4,
  /** The consumer's position, low word (the high word follows). */
  head: W_HEAD_LO * 4,
  /** 1 once the consumer closed. */
  readerClosed: W_READER_CLOSED * 4,
  /** Odd while the consumer sleeps until a record arrives. */
  consumerWait: W_CONSUMER_WAIT * 4,
  /** The data area: records. */
  data: W_DATA * 4,
});
