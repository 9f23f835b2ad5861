// SPEC 3.3 "Reading a slot": a slot copied while it changes hands must not be taken for a peer
// (one session's owner word with another's name). A worker thread rejoins one slot as new
// sessions in a tight loop, following SPEC 3.4; the main thread copies the slot meanwhile.
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { SLOT, SLOT_STATE } from '../../src/bus/layout.js';
import type { Geometry } from '../../src/bus/region.js';
import { readSlot } from '../../src/bus/slots.js';

const REJOIN = `
const { workerData } = require('node:worker_threads');
const { memory, base, stop } = workerData;
const w = new Int32Array(memory, base, 64);
const bytes = new Uint8Array(memory, base + 32, 64);
const flag = new Int32Array(stop);
let session = 1;
while (Atomics.load(flag, 0) === 0) {
  const old = Atomics.load(w, 0);
  Atomics.compareExchange(w, 0, old, 0); // leave (or evicted)
  session = (session % 1000000) + 1;
  if (Atomics.compareExchange(w, 0, 0, session) !== 0) continue;
  Atomics.store(w, 1, ${SLOT_STATE.joining});
  w[2] = 0xffffffff | 0; w[3] = 0; w[5] = 1000; // deviceId, vectors, period
  const name = 'peer-' + session;
  bytes.fill(0);
  for (let i = 0; i < name.length; i++) bytes[i] = name.charCodeAt(i);
  w[7] = name.length;
  Atomics.store(w, 1, ${SLOT_STATE.up});
  Atomics.store(w, ${SLOT.published / 4}, session);
}
`;

describe('SPEC 3.3: a slot copy that raced a change of owner is not a peer', () => {
  it('never yields a published, up slot whose name belongs to another session', async () => {
    const memory = new SharedArrayBuffer(8192 + 256);
    const stop = new SharedArrayBuffer(4);
    const geometry: Geometry = { base: 0, regionSize: memory.byteLength, profile: 'shared', maxPeers: 2, tableOffset: 8192, sectionsOffset: 0, sectionSize: 0, entries: 1, generation: 1 };
    const worker = new Worker(REJOIN, { eval: true, workerData: { memory, base: 8192, stop } });
    try {
      let taken = 0;
      const wrong: string[] = [];
      const until = performance.now() + 1500;
      while (taken < 20_000 && performance.now() < until) {
        const copy = readSlot(memory as unknown as ArrayBuffer, geometry, 0);
        if (copy.owner === 0 || copy.state !== SLOT_STATE.up || copy.published !== copy.owner || copy.problem || !copy.stable) continue;
        taken++;
        if (copy.name !== `peer-${copy.owner}` && wrong.length < 5) wrong.push(`session ${copy.owner} named '${copy.name}'`);
      }
      expect(wrong).toEqual([]);
      expect(taken).toBeGreaterThan(0);
    } finally {
      Atomics.store(new Int32Array(stop), 0, 1);
      await worker.terminate();
    }
  });
});
