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
  magic: W_MAGIC * 4,
  version: W_VERSION * 4,
  headerSize: W_HEADER_SIZE * 4,
  capacity: W_CAPACITY * 4,
  flags: W_FLAGS * 4,
  tail: W_TAIL_LO * 4,
  writerClosed: W_WRITER_CLOSED * 4,
  producerWait: W_PRODUCER_WAIT * 4,
  head: W_HEAD_LO * 4,
  readerClosed: W_READER_CLOSED * 4,
  consumerWait: W_CONSUMER_WAIT * 4,
  data: W_DATA * 4,
});
