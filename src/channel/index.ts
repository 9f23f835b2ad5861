/**
 * Typed single-producer/single-consumer channels in shared memory: the ring format of SPEC.md
 * ("Ring"), codecs, waiting strategies, and validation against a hostile peer. TypeScript over
 * any ArrayBuffer; it never touches a backend (a doorbell is the wait strategy's business), and
 * the blocking calls use one native primitive (wait for a word or an fd).
 *
 * @module
 */
import { ChannelReader } from './reader.js';
import type { ChannelOptions, RingPlacement } from './header.js';
import { formatRing } from './header.js';
import { ChannelWriter } from './writer.js';

export { bytesCodec, jsonCodec, utf8Codec, type Codec } from './codec.js';
export { ChannelError, type RingField } from './errors.js';
export {
  DOORBELL_BURST,
  DOORBELL_EVERY_MS,
  RECORD_HEADER_SIZE,
  RECORD_TYPE_MAX,
  RECORD_TYPE_PADDING,
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MAX_CAPACITY,
  RING_MIN_CAPACITY,
  RING_VERSION_MAJOR,
  RING_VERSION_MINOR,
  isRingCapacity,
  recordSize,
  ringCapacityFor,
  ringSize,
} from './layout.js';
export { RING_FIELDS } from './fields.js';
export { failedReader, inspectRing, ringEnds, type RingEnds, type RingSnapshot } from './inspect.js';
export { ChannelReader, type DrainCallback } from './reader.js';
export { formatRing, type ChannelOptions, type OpenOptions, type FormatOptions, type RingPlacement } from './header.js';
export type { BlockingOptions } from './blocking.js';
export {
  deviceWaitStrategy,
  pollingWaitStrategy,
  type DeviceWaitOptions,
  type BlockingWake,
  type DoorbellDevice,
  type PollingOptions,
  type WaitStrategy,
} from './wait.js';
export { ChannelWriter, type SendOptions } from './writer.js';
export { channelDuplex, channelReadable, channelWritable, STREAM_DATA, type ChannelStreamOptions } from './stream.js';

/** Both ends of one channel, for {@link createChannel}. */
export interface Channel<T> {
  /** The sending end. */
  writer: ChannelWriter<T>;
  /** The receiving end. */
  reader: ChannelReader<T>;
}

/**
 * Formats a ring and opens both of its ends in this thread: for tests, and for handing one
 * end's region to a worker. Cross-process peers instead open one end each
 * (`new ChannelWriter(...)`, `new ChannelReader(...)`), one of them with `format: true`.
 *
 * @example
 * ```ts
 * const { writer, reader } = createChannel<string>(new ArrayBuffer(4096), { codec: utf8Codec });
 * writer.trySend('hi');
 * reader.tryReceive(); // 'hi'
 * ```
 */
export function createChannel<T = Uint8Array>(
  memory: ArrayBuffer,
  options: RingPlacement & Omit<ChannelOptions<T>, 'format' | keyof RingPlacement> = {},
): Channel<T> {
  formatRing(memory, options);
  const { offset, size } = options;
  const place = { ...options, offset, size, format: false };
  return { writer: new ChannelWriter<T>(memory, place), reader: new ChannelReader<T>(memory, place) };
}
