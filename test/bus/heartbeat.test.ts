// The heartbeat rule (issue 11, defect 6), on the library's clock: a peer is down after three of
// its periods without a visible beat, so one late heartbeat (a GC pause, a stalled TCG guest)
// never evicts a live peer, and a dead peer is declared down within the stated bound. The other
// peer here is the test itself, writing its slot as any implementation of the layout would; the
// clock is vitest's fake one, so the rule is checked exactly and never against load.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { attach, openFile, type Bus, type FileDevice } from '../../src/index.js';
import { claimSlot, publishSlot, readSlot, slotOwner, storeHeartbeat } from '../../src/bus/slots.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
  vi.useRealTimers();
});

/** The bound the documentation states: 3 periods of the peer + 2 scan intervals of the observer. */
function downBound(peerPeriod: number, observerPeriod: number): number {
  return 3 * peerPeriod + 2 * Math.max(5, observerPeriod / 4);
}

async function observer(period: number): Promise<{ bus: Bus; dev: FileDevice; downs: number[] }> {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'performance', 'Date'] });
  const path = shmPath('heartbeat');
  const dev = openFile(path, { size: 1 << 20, create: true });
  cleanup.push(() => (dev.close(), rmSync(path, { force: true })));
  const bus = await attach(dev, { name: 'observer', heartbeat: period });
  cleanup.push(() => bus.close());
  const downs: number[] = [];
  bus.on('peer-down', (_p, reason) => reason === 'heartbeat' && downs.push(performance.now()));
  return { bus, dev, downs };
}

/** A peer the test drives by hand: it claims a slot and beats when told to. */
function handPeer(bus: Bus, dev: FileDevice, period: number): { beat(): void; evicted(): boolean; live(ms: number): Promise<void> } {
  const { memory } = dev;
  const g = bus.geometry;
  const session = 0x5eed;
  const slot = claimSlot(memory, g, session, null);
  expect(slot).toBeGreaterThanOrEqual(0);
  publishSlot(memory, g, slot, session, { deviceId: null, vectors: 0, period, name: 'paused' });
  const beat = (): void => storeHeartbeat(memory, g, slot, (readSlot(memory, g, slot).heartbeat + 1) >>> 0);
  return {
    beat,
    evicted: () => slotOwner(memory, g, slot) !== session,
    // Beats on time for `ms`.
    async live(ms: number): Promise<void> {
      for (let t = 0; t < ms; t += period) {
        await vi.advanceTimersByTimeAsync(period);
        beat();
      }
    },
  };
}

describe('heartbeats', () => {
  for (const [peerPeriod, observerPeriod] of [[100, 100], [100, 1000], [1000, 100], [10, 10]] as const) {
    it(`a peer (period ${peerPeriod} ms) silent for 3 periods once (one beat 2 periods late) is not evicted (observer period ${observerPeriod} ms)`, async () => {
      const { bus, dev, downs } = await observer(observerPeriod);
      const peer = handPeer(bus, dev, peerPeriod);
      await peer.live(2 * Math.max(observerPeriod, peerPeriod));
      expect(bus.peers.map((p) => p.name)).toEqual(['paused']);
      // One gap of three periods since the last beat (two beats missed, the next one 2 periods
      // late), then regular beats.
      await vi.advanceTimersByTimeAsync(3 * peerPeriod);
      peer.beat();
      await peer.live(5 * peerPeriod);
      expect(downs).toEqual([]);
      expect(peer.evicted()).toBe(false);
      expect(bus.peers.map((p) => p.name)).toEqual(['paused']);
    });

    it(`a peer (period ${peerPeriod} ms) that stops is down and evicted within 3 periods + 2 scans (observer period ${observerPeriod} ms)`, async () => {
      const { bus, dev, downs } = await observer(observerPeriod);
      const peer = handPeer(bus, dev, peerPeriod);
      await peer.live(2 * Math.max(observerPeriod, peerPeriod));
      expect(downs).toEqual([]);
      const lastBeat = performance.now();
      const bound = downBound(peerPeriod, observerPeriod);
      await vi.advanceTimersByTimeAsync(bound);
      expect(downs.length).toBe(1);
      expect(downs[0]! - lastBeat).toBeGreaterThan(3 * peerPeriod);
      expect(downs[0]! - lastBeat).toBeLessThanOrEqual(bound);
      expect(peer.evicted()).toBe(true);
    });
  }
});
