import { describe, expect, it } from 'vitest';
import { ChannelReader, ChannelWriter, formatRing, ringSize } from '../../src/channel/index.js';
import { Prng } from './prng.js';

// A payload that encodes its own sequence number and length, so any mix-up shows.
function payload(seq: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (seq * 31 + i * 7) & 0xff;
  return bytes;
}

describe('ring properties (seeded random operation sequences against a model queue)', () => {
  const seeds = Array.from({ length: 40 }, (_, i) => 0x5eed + i * 7919);
  it.each(seeds)('seed %i: everything sent is received once, in order, intact', (seed) => {
    const rng = new Prng(seed);
    const capacity = rng.pick([64, 128, 256, 1024, 4096]);
    const memory = new ArrayBuffer(128 + ringSize(capacity));
    // Start anywhere, often just before the low word wraps at 2^32.
    const position = rng.chance(0.5) ? 2 ** 32 - 8 * rng.int(capacity) : 8 * rng.int(2 ** 40);
    formatRing(memory, { offset: 128, capacity, position });
    const writer = new ChannelWriter(memory, { offset: 128 });
    const reader = new ChannelReader(memory, { offset: 128 });
    const model: Array<{ seq: number; length: number; type: number }> = [];
    let sent = 0;
    let received = 0;
    const check = (bytes: Uint8Array, offset: number, length: number, type: number): void => {
      const expected = model.shift();
      expect(expected).toBeDefined();
      expect({ length, type }).toEqual({ length: expected!.length, type: expected!.type });
      const want = payload(expected!.seq, length);
      for (let i = 0; i < length; i++) if (bytes[offset + i] !== want[i]) expect(bytes[offset + i]).toBe(want[i]);
      received++;
    };
    const maxLength = (): number => rng.pick([0, 1, 7, 8, 9, 24, capacity / 4, capacity / 2, capacity - 8, rng.int(capacity - 7)]);
    for (let step = 0; step < 3000; step++) {
      const op = rng.int(10);
      if (op < 4) {
        const length = maxLength();
        const type = rng.chance(0.2) ? rng.int(0x10000) : 0;
        const ok = writer.trySend(payload(sent, length), type);
        if (ok) model.push({ seq: sent++, length, type });
      } else if (op < 5) {
        const length = maxLength();
        const view = writer.tryClaim(length);
        if (view) {
          const actual = rng.int(length + 1);
          if (rng.chance(0.2)) {
            writer.abort();
          } else {
            view.set(payload(sent, actual));
            writer.commit(actual, 3);
            model.push({ seq: sent++, length: actual, type: 3 });
          }
        }
      } else if (op < 8) {
        const got = reader.tryReceive();
        if (got === undefined) {
          expect(model.length).toBe(0);
        } else {
          check(got, 0, got.length, model[0]?.type ?? -1);
        }
      } else {
        reader.drain(check, rng.int(5) + 1);
      }
      // Invariant: free + used = capacity, and used covers what the model holds.
      const used = capacity - writer.free;
      expect(used).toBe(reader.available);
      expect(used).toBeGreaterThanOrEqual(model.reduce((n, m) => n + 8 + Math.ceil(m.length / 8) * 8, 0));
    }
    reader.drain(check);
    expect(model).toEqual([]);
    expect(received).toBe(sent);
    writer.close();
    expect(reader.done).toBe(true);
  });
});
