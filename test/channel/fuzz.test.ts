import { describe, expect, it } from 'vitest';
import { ChannelError, ChannelReader, ChannelWriter, formatRing, ringSize, RECORD_TYPE_PADDING } from '../../src/channel/index.js';
import {
  RING_HEADER_SIZE,
  W_CONSUMER_WAIT,
  W_DATA,
  W_HEAD_HI,
  W_HEAD_LO,
  W_PRODUCER_WAIT,
  W_READER_CLOSED,
  W_TAIL_HI,
  W_TAIL_LO,
  W_WRITER_CLOSED,
} from '../../src/channel/layout.js';
import { Prng } from './prng.js';

const CANARY = 0xa5;
const GUARD = 512; // canary bytes on each side of the ring (a multiple of 128)
const EXPECTED_CODES = new Set(['ERR_IVSHMEM_CHANNEL_CORRUPT', 'ERR_IVSHMEM_CHANNEL_CLOSED']);

/**
 * Runs random and adversarial ring states through both ends and asserts that each operation
 * either works or throws a typed ChannelError, that every byte handed out lies inside the data
 * area, and that the canaries around the ring are untouched.
 */
function fuzz(seed: number, states: number): Record<string, number> {
  const rng = new Prng(seed);
  const outcomes: Record<string, number> = {};
  const count = (key: string): void => void (outcomes[key] = (outcomes[key] ?? 0) + 1);
  const capacity = rng.pick([64, 256, 1024]);
  const memory = new ArrayBuffer(GUARD + ringSize(capacity) + GUARD);
  const all = new Uint8Array(memory);
  all.fill(CANARY);
  const u32 = new Uint32Array(memory, GUARD, ringSize(capacity) / 4);
  const dataStart = GUARD + RING_HEADER_SIZE;
  const payload = new Uint8Array(capacity);
  let writer: ChannelWriter | null = null;
  let reader: ChannelReader | null = null;

  const onError = (error: unknown): void => {
    if (!(error instanceof ChannelError) || !EXPECTED_CODES.has(error.code)) throw error;
    count(error.field ?? error.code);
  };
  const within = (bytes: Uint8Array, offset: number, length: number): void => {
    const start = bytes.byteOffset + offset;
    if (bytes.buffer !== memory || start < dataStart || start + length > dataStart + capacity || length < 0) {
      throw new Error(`record [${start}, ${start + length}) outside the data area [${dataStart}, ${dataStart + capacity})`);
    }
  };
  // Values a hostile peer would try: near the head, the capacity, the 32-bit edges.
  const evil = (base: number): number =>
    rng.pick([
      0,
      1,
      7,
      8,
      capacity - 8,
      capacity,
      capacity + 8,
      0x7fffffff,
      0x80000000,
      0xfffffff8,
      0xffffffff,
      RECORD_TYPE_PADDING,
      0x10000,
      rng.u32(),
      (base + 8 * (rng.int(capacity / 4 + 3) - 1)) >>> 0,
      (base - 8 * rng.int(4)) >>> 0,
    ]);

  for (let state = 0; state < states; state++) {
    if (!writer || !reader || writer.failure || reader.failure || writer.closed || rng.chance(0.002)) {
      const position = rng.chance(0.3) ? 2 ** 32 - 8 * rng.int(capacity / 4) : 8 * rng.int(2 ** 36);
      formatRing(memory, { offset: GUARD, size: ringSize(capacity), position });
      writer = new ChannelWriter(memory, { offset: GUARD, size: ringSize(capacity) });
      reader = new ChannelReader(memory, { offset: GUARD, size: ringSize(capacity) });
      count('format');
    }
    // Mutate like a hostile peer: header words, record headers at the head, or random bytes.
    const head = u32[W_HEAD_LO]!;
    const at = W_DATA + ((head & (capacity - 1)) >>> 2);
    switch (rng.int(12)) {
      case 0:
        u32[W_TAIL_LO] = evil(u32[W_TAIL_LO]!); // tail
        break;
      case 1:
        u32[W_HEAD_LO] = evil(head); // head (the writer reads it)
        break;
      case 2:
        u32[at] = evil(u32[at]!); // length at head
        break;
      case 3:
        u32[at + 1] = evil(u32[at + 1]!); // type at head
        break;
      case 4: {
        // a padding record that almost reaches the end
        const index = head & (capacity - 1);
        u32[at] = capacity - index - 8 + 8 * (rng.int(3) - 1);
        u32[at + 1] = RECORD_TYPE_PADDING;
        break;
      }
      case 5:
        u32[rng.int(5)] = rng.chance(0.5) ? rng.u32() : u32[rng.int(5)]! ^ (1 << rng.int(32)); // formatter line
        break;
      case 6:
        u32[rng.pick([W_TAIL_HI, W_WRITER_CLOSED, W_PRODUCER_WAIT, W_HEAD_HI, W_READER_CLOSED, W_CONSUMER_WAIT])] = evil(0); // high words, wait words, closed flags
        break;
      case 7:
        u32[W_DATA + rng.int(capacity / 4)] = rng.u32();
        break;
      default:
        break; // honest state: exercise the valid paths too
    }
    // Operate; every result is either valid or a typed error.
    for (let op = rng.int(3) + 1; op > 0; op--) {
      try {
        switch (rng.int(6)) {
          case 0:
          case 1: {
            const length = rng.int(capacity / 2);
            rng.fill(payload.subarray(0, Math.min(length, 16)));
            writer.trySend(payload.subarray(0, length), rng.int(3));
            count('send');
            break;
          }
          case 2: {
            const got = reader.tryReceive();
            if (got && got.length > capacity - 8) throw new Error(`received ${got.length} bytes from a ${capacity}-byte ring`);
            count(got ? 'received' : 'empty');
            break;
          }
          case 3:
            reader.drain(within, rng.int(4) + 1);
            count('drain');
            break;
          case 4: {
            const view = writer.tryClaim(rng.int(capacity / 2));
            if (view) {
              within(view, 0, view.length);
              writer.commit(rng.int(view.length + 1));
            }
            count('claim');
            break;
          }
          default:
            void reader.done;
            void reader.available;
            void writer.free;
            break;
        }
      } catch (error) {
        onError(error);
      }
    }
    // Attaching to a scribbled ring must also fail cleanly.
    if (rng.chance(0.01)) {
      try {
        new ChannelReader(memory, { offset: GUARD, size: ringSize(capacity) });
      } catch (error) {
        onError(error);
      }
    }
    for (let i = 0; i < GUARD; i += 8) {
      if (all[i] !== CANARY || all[GUARD + ringSize(capacity) + i] !== CANARY) throw new Error(`canary overwritten near byte ${i}`);
    }
  }
  for (let i = 0; i < GUARD; i++) {
    expect(all[i]).toBe(CANARY);
    expect(all[GUARD + ringSize(capacity) + i]).toBe(CANARY);
  }
  return outcomes;
}

describe('fuzz: random and adversarial ring states', () => {
  it('only ever yields valid messages or typed errors, inside the ring', () => {
    const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
    const perSeed = Number(process.env.CHANNEL_FUZZ_STATES ?? 125_000);
    const totals: Record<string, number> = {};
    const start = performance.now();
    for (const seed of seeds) {
      for (const [key, n] of Object.entries(fuzz(seed, perSeed))) totals[key] = (totals[key] ?? 0) + n;
    }
    const states = seeds.length * perSeed;
    const operations = Object.entries(totals).reduce((n, [key, v]) => (key === 'format' ? n : n + v), 0);
    console.log(
      `channel fuzz: ${states.toLocaleString('en')} ring states, ${operations.toLocaleString('en')} operations in ${((performance.now() - start) / 1000).toFixed(1)} s; outcomes ${JSON.stringify(totals)}`,
    );
    expect(totals.tail).toBeGreaterThan(0);
    expect(totals.head).toBeGreaterThan(0);
    expect(totals.length).toBeGreaterThan(0);
    expect(totals.type).toBeGreaterThan(0);
    expect(totals.padding).toBeGreaterThan(0);
    expect(totals.magic).toBeGreaterThan(0);
    expect(totals.received).toBeGreaterThan(0);
  }, 120_000);
});
