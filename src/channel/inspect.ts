// What the layers above need to know about a ring without attaching an end to it: a snapshot for
// debugging tools, whether its ends have closed, and a reader that stands for a ring that
// could not be opened. Only this folder reads the ring's header words.
import type { Codec } from './codec.js';
import type { ChannelError } from './errors.js';
import {
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MIN_CAPACITY,
  W_CAPACITY,
  W_CONSUMER_WAIT,
  W_HEAD_HI,
  W_HEAD_LO,
  W_MAGIC,
  W_PRODUCER_WAIT,
  W_READER_CLOSED,
  W_TAIL_HI,
  W_TAIL_LO,
  W_WRITER_CLOSED,
} from './layout.js';
import { ChannelReader } from './reader.js';
import { formatRing } from './header.js';

/** One channel ring as it is right now (copied once; not validated beyond `valid`). */
export interface RingSnapshot {
  /** The ring magic is in place. */
  valid: boolean;
  capacity: number;
  head: number;
  tail: number;
  /** Bytes written and not yet consumed. */
  fill: number;
  writerClosed: boolean;
  readerClosed: boolean;
  /** The wait words: odd while that end sleeps and wants a doorbell. */
  producerSleeping: boolean;
  consumerSleeping: boolean;
}

/** Which ends of a ring have closed. */
export interface RingEnds {
  writerClosed: boolean;
  readerClosed: boolean;
}

function header(memory: ArrayBuffer, offset: number): Uint32Array {
  return new Uint32Array(memory, offset, RING_HEADER_SIZE / 4);
}

/** Reads the ring header at `offset` without changing a byte of it: for dumps and debugging. */
export function inspectRing(memory: ArrayBuffer, offset: number): RingSnapshot {
  const w = header(memory, offset).slice();
  const head = w[W_HEAD_LO]! + w[W_HEAD_HI]! * 2 ** 32;
  const tail = w[W_TAIL_LO]! + w[W_TAIL_HI]! * 2 ** 32;
  return {
    valid: w[W_MAGIC] === RING_MAGIC,
    capacity: w[W_CAPACITY]!,
    head,
    tail,
    fill: tail - head,
    writerClosed: w[W_WRITER_CLOSED] !== 0,
    readerClosed: w[W_READER_CLOSED] !== 0,
    producerSleeping: (w[W_PRODUCER_WAIT]! & 1) === 1,
    consumerSleeping: (w[W_CONSUMER_WAIT]! & 1) === 1,
  };
}

/** Whether the ring's writer and reader have closed (atomic loads of the two close flags). */
export function ringEnds(memory: ArrayBuffer, offset: number): RingEnds {
  const w = header(memory, offset);
  return { writerClosed: Atomics.load(w, W_WRITER_CLOSED) !== 0, readerClosed: Atomics.load(w, W_READER_CLOSED) !== 0 };
}

/**
 * A reader that has already failed with `error`: it stands for a ring a peer corrupted, so that
 * code handing out readers has one kind of thing to hand out. It owns a private scratch ring and
 * never touches shared memory.
 */
export function failedReader<T>(error: ChannelError, codec?: Codec<T>): ChannelReader<T> {
  const scratch = new ArrayBuffer(RING_HEADER_SIZE + RING_MIN_CAPACITY);
  formatRing(scratch, { capacity: RING_MIN_CAPACITY });
  const reader = new ChannelReader<T>(scratch, { codec });
  reader.abandon(error);
  return reader;
}
