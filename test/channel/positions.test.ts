// SPEC 2.3 "Positions": each end rebuilds the other's 64-bit position from the two low words
// alone, with d = (tailLow - headLow) mod 2^32; an attaching end reads its own from both words.
// These properties hold the formulas against what the library writes, on positions that cross
// multiples of 2^32 (where the low word wraps and the high word carries).
import { describe, expect, it } from 'vitest';
import { ChannelReader, ChannelWriter, formatRing, ringSize } from '../../src/channel/index.js';
import { W_HEAD_HI, W_HEAD_LO, W_TAIL_HI, W_TAIL_LO } from '../../src/channel/layout.js';
import { Prng } from './prng.js';

const TWO32 = 2 ** 32;

/** SPEC 2.3: the distance both ends compute from the low words. */
function distance(tailLow: number, headLow: number): number {
  return (tailLow - headLow) >>> 0;
}
/** SPEC 2.3: the consumer, owning `head`, rebuilds the tail. */
function consumerTail(head: number, tailLow: number, headLow: number): number {
  return head + distance(tailLow, headLow);
}
/** SPEC 2.3: the producer, owning `tail`, rebuilds the head. */
function producerHead(tail: number, tailLow: number, headLow: number): number {
  return tail - distance(tailLow, headLow);
}
/** SPEC 2.3: an attaching end's own position from its two words. */
function own(high: number, low: number): number {
  return high * TWO32 + low;
}

describe('SPEC 2.3 position rebuilding, across multiples of 2^32', () => {
  const seeds = Array.from({ length: 16 }, (_, i) => 0x9051 + i * 104729);
  it.each(seeds)('seed %i: both ends rebuild the true positions; attaching ends read their own', (seed) => {
    const rng = new Prng(seed);
    const capacity = rng.pick([64, 256, 4096, 65536]);
    const region = new ArrayBuffer(ringSize(capacity));
    // Just before a multiple of 2^32 (1, 2 or a large one), so the run crosses it.
    const k = rng.pick([1, 2, 3, 2 ** 20 - 1]);
    const start = k * TWO32 - 8 * (1 + rng.int(capacity / 4));
    formatRing(region, { capacity, position: start });
    const u32 = new Uint32Array(region, 0, 160);
    let writer = new ChannelWriter(region);
    let reader = new ChannelReader(region);
    // The model: true 64-bit positions, advanced by the strides the spec defines (2.4).
    let tail = start;
    let head = start;
    let lowWrapped = false;
    const stride = (length: number): number => 8 + Math.ceil(length / 8) * 8;
    // Published, unconsumed strides in order: padding records and real ones.
    const queue: Array<{ padding: boolean; bytes: number }> = [];
    for (let step = 0; step < 2500; step++) {
      if (rng.chance(0.55)) {
        const length = rng.int(Math.min(capacity - 8, 600) + 1);
        const contiguous = capacity - (tail % capacity);
        const free = capacity - (tail - head);
        const sent = writer.trySend(new Uint8Array(length));
        const added: Array<{ padding: boolean; bytes: number }> = [];
        if (stride(length) <= contiguous) {
          expect(sent).toBe(stride(length) <= free);
          if (sent) added.push({ padding: false, bytes: stride(length) });
        } else {
          // It does not fit before the end: padding first, published alone if need be (2.4).
          expect(sent).toBe(contiguous + stride(length) <= free);
          if (sent || contiguous <= free) added.push({ padding: true, bytes: contiguous });
          if (sent) added.push({ padding: false, bytes: stride(length) });
        }
        for (const a of added) {
          queue.push(a);
          tail += a.bytes;
        }
      } else {
        const message = reader.tryReceive();
        // The reader consumes the padding before a record with it, and trailing padding when
        // it finds nothing else.
        while (queue.length > 0 && queue[0]!.padding) head += queue.shift()!.bytes;
        if (message !== undefined) head += queue.shift()!.bytes;
        else expect(queue).toEqual([]);
      }
      const tailLow = u32[W_TAIL_LO]!;
      const headLow = u32[W_HEAD_LO]!;
      if (tailLow < start % TWO32 || headLow < start % TWO32) lowWrapped = true;
      // The words the library stored are the model's positions (the owners are quiescent here).
      expect(own(u32[W_TAIL_HI]!, tailLow)).toBe(tail);
      expect(own(u32[W_HEAD_HI]!, headLow)).toBe(head);
      // Each end rebuilds the other's position from the low words alone.
      expect(consumerTail(head, tailLow, headLow)).toBe(tail);
      expect(producerHead(tail, tailLow, headLow)).toBe(head);
      // And what the ends report is the same distance.
      expect(reader.available).toBe(distance(tailLow, headLow));
      expect(writer.free).toBe(capacity - distance(tailLow, headLow));
      if (rng.chance(0.01)) {
        // A new process takes over an end: it reads its own position from both words and goes on.
        if (rng.chance(0.5)) writer = new ChannelWriter(region);
        else reader = new ChannelReader(region);
      }
    }
    expect(lowWrapped).toBe(true);
  });

  it('the version 1.0 formula, read literally, is wrong for the producer', () => {
    // other = own - ((otherLow - ownLow) mod 2^32), the producer's reading of the 1.0 text.
    const tail = TWO32 + 16;
    const head = TWO32 - 48;
    const literal = tail - ((head % TWO32) - (tail % TWO32) >>> 0);
    expect(literal).not.toBe(head);
    expect(producerHead(tail, tail % TWO32, head % TWO32)).toBe(head);
  });
});
