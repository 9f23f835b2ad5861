// Where a bus peer's rings lie in its section, found the way a third process would: by scanning.
import type { Bus } from '../../src/index.js';
import { ENTRY_SIZE, RING_MAGIC } from '../../src/spec/index.js';

/** Byte offsets of the rings in `bus`'s own section, in memory order. */
export function ringsOf(bus: Bus, raw: Uint32Array): number[] {
  const g = bus.geometry;
  const section = g.sectionsOffset + bus.self.slot * g.sectionSize;
  const rings: number[] = [];
  for (let at = section + g.entries * ENTRY_SIZE; at < section + g.sectionSize; at += 128) {
    if (Atomics.load(raw, at / 4) === RING_MAGIC) rings.push(at);
  }
  return rings;
}
