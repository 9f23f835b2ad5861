// Version 1.1 rules of the region (SPEC 2.8 with 3.7, 3.3, 3.5), on real files shared by two
// devices, with the second peer's slot written by hand where a hostile or dead peer is needed.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { attach, openFile, type Bus, type Device } from '../../src/index.js';
import { RING_FIELDS } from '../../src/spec/index.js';
import { shmPath } from '../helpers.js';
import { ringsOf } from './rings.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A fresh shared-memory file; each call of the returned function maps it as one more device. */
function sharedMemory(size = 1 << 20): () => Device {
  const path = shmPath('bus11');
  openFile(path, { size, create: true }).close();
  cleanup.push(() => rmSync(path, { force: true }));
  return () => {
    const device = openFile(path);
    cleanup.push(() => device.close());
    return device;
  };
}

async function join(device: Device, options: Parameters<typeof attach>[1]): Promise<Bus> {
  const bus = await attach(device, options);
  cleanup.push(() => bus.close());
  return bus;
}

describe('SPEC 3.7: channels closed by the writer and read to the end are reclaimed', () => {
  it('opens more channels than the directory has entries when each is closed and read to EOF, without reader.close()', async () => {
    const device = sharedMemory();
    const a = await join(device(), { name: 'a', heartbeat: 100, entries: 4 });
    const b = await join(device(), { name: 'b', heartbeat: 100 });
    const peer = await a.waitForPeer('b');
    for (let i = 0; i < 12; i++) {
      const writer = a.open(peer, `c${i}`);
      await writer.send(new Uint8Array([i]));
      writer.close();
      const reader = await b.accept(`c${i}`);
      expect(Array.from(await reader.receive())).toEqual([i]);
      await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    }
  });
});

describe('SPEC 3.7: a ring is freed on its owner\'s own word that it is done, not on the shared words alone', () => {
  it('a third party setting both closed words of a live ring does not get it freed and formatted again under its writer', async () => {
    const device = sharedMemory();
    const aDevice = device();
    const a = await join(aDevice, { name: 'a', heartbeat: 100 });
    const b = await join(device(), { name: 'b', heartbeat: 100 });
    const peer = await a.waitForPeer('b');
    const first = a.open(peer, 'first');
    await b.accept('first');
    // Any process mapping the region can write the ring's words (SPEC threat model).
    const raw = new Uint32Array(device().memory);
    const [ring] = ringsOf(a, raw);
    Atomics.store(raw, (ring! + RING_FIELDS.writerClosed) / 4, 1);
    Atomics.store(raw, (ring! + RING_FIELDS.readerClosed) / 4, 1);
    const second = a.open(peer, 'second');
    const reader = await b.accept('second');
    expect(ringsOf(a, raw)).toHaveLength(2); // the live ring kept its bytes
    // The first writer sees the reader-closed word it was shown; it publishes nowhere.
    expect(() => first.trySend(new Uint8Array([1]))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
    expect(second.trySend(new Uint8Array([2]))).toBe(true);
    expect(Array.from(await reader.receive())).toEqual([2]);
  });
});

/** Writes slot `i` by hand, as a hostile or dead peer leaves it (SPEC 3.3 offsets). */
function plant(memory: ArrayBuffer, bus: Bus, i: number, slot: { owner: number; state: number; published: number; period: number; name?: string }): Uint32Array {
  const w = new Uint32Array(memory, bus.geometry.tableOffset + i * 256, 64);
  const name = new TextEncoder().encode(slot.name ?? 'planted');
  w[2] = 0xffffffff; // no doorbell
  w[3] = 0;
  w[4] = 7; // heartbeat
  w[5] = slot.period;
  new Uint8Array(memory, bus.geometry.tableOffset + i * 256 + 32, name.length).set(name);
  w[7] = name.length;
  w[1] = slot.state;
  w[24] = slot.published;
  Atomics.store(w, 0, slot.owner);
  return w;
}

async function until(condition: () => boolean, what: string, limit = 10_000): Promise<void> {
  const deadline = performance.now() + limit;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`still waiting for ${what} after ${limit} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('SPEC 3.5: slots held by no live peer are freed; periods above the accepted maximum are refused', () => {
  it.each([
    ['a period out of range (a huge period)', { state: 2, published: 0x1234, period: 0xffffffff }],
    ['a peer that died while joining', { state: 1, published: 0, period: 100 }],
    ['a peer that died while leaving', { state: 3, published: 0x1234, period: 100 }],
    ['a valid period above the observer\'s maximum', { state: 2, published: 0x1234, period: 1000 }],
  ])('frees a silent slot with %s after three accepted periods', async (_what, slot) => {
    const dev = sharedMemory()();
    const a = await join(dev, { name: 'a', heartbeat: 20, maxPeerHeartbeat: 20 });
    const ups: string[] = [];
    a.on('peer-up', (p) => ups.push(p.name));
    const w = plant(dev.memory, a, 1, { owner: 0x1234, ...slot });
    await until(() => Atomics.load(w, 0) === 0, 'the slot to be freed');
    expect(ups).toEqual([]);
  });

  it('keeps a slot whose heartbeat still moves, without taking it as a peer', async () => {
    const dev = sharedMemory()();
    // The observer's scans and clock are the test's: each step moves one heartbeat, then time.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] });
    try {
      const a = await join(dev, { name: 'a', heartbeat: 20, maxPeerHeartbeat: 20 });
      const ups: string[] = [];
      a.on('peer-up', (p) => ups.push(p.name));
      const moving = plant(dev.memory, a, 1, { owner: 0x1234, state: 2, published: 0x1234, period: 1000 });
      // The control: the same slot, silent. It is freed after three accepted periods (60 ms),
      // which shows the scans ran over the same time.
      const silent = plant(dev.memory, a, 2, { owner: 0x5678, state: 2, published: 0x5678, period: 1000 });
      for (let ms = 0; ms < 400; ms += 5) {
        Atomics.store(moving, 4, moving[4]! + 1);
        vi.advanceTimersByTime(5);
      }
      expect(Atomics.load(silent, 0)).toBe(0);
      expect(Atomics.load(moving, 0)).toBe(0x1234);
      expect(ups).toEqual([]);
      expect(a.peers).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('refuses a maxPeerHeartbeat outside 10..60000 ms', async () => {
    const dev = sharedMemory()();
    await expect(attach(dev, { name: 'a', maxPeerHeartbeat: 60_001 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' });
  });
});

describe('SPEC 3.5: nothing is written into a section that may have a new owner', () => {
  function section(memory: ArrayBuffer, bus: Bus, slot: number): Uint8Array {
    const g = bus.geometry;
    return new Uint8Array(memory, g.sectionsOffset + slot * g.sectionSize, g.sectionSize).slice();
  }

  it('a reader draining the channel of a peer that left reads to EOF without writing its head or reader-closed there', async () => {
    const device = sharedMemory();
    const a = await join(device(), { name: 'a', heartbeat: 100 });
    const bDevice = device();
    const b = await attach(bDevice, { name: 'b', heartbeat: 100 });
    const writer = b.open(await b.waitForPeer('a'), 'last words');
    const reader = await a.accept('last words');
    for (let i = 0; i < 3; i++) await writer.send(new Uint8Array([i]));
    const gone = new Promise((resolve) => a.once('peer-down', resolve));
    const slot = b.self.slot;
    b.close();
    await gone;
    const before = section(bDevice.memory, a, slot);
    const got: number[] = [];
    for await (const message of reader) got.push(message[0]!);
    expect(got).toEqual([0, 1, 2]);
    expect(section(bDevice.memory, a, slot)).toEqual(before);
  });

  it('an evicted peer\'s readers write nothing when the application closes them', async () => {
    const device = sharedMemory();
    const aDevice = device();
    const a = await join(aDevice, { name: 'a', heartbeat: 20 });
    const b = await join(device(), { name: 'b', heartbeat: 100 });
    const writer = b.open(await b.waitForPeer('a'), 'to a');
    await writer.send(new Uint8Array([1]));
    const reader = await a.accept('to a');
    const closed = new Promise((resolve) => a.once('close', resolve));
    Atomics.store(new Uint32Array(aDevice.memory, a.geometry.tableOffset + a.self.slot * 256, 1), 0, 0);
    await closed;
    const before = section(aDevice.memory, a, b.self.slot);
    reader.close();
    expect(section(aDevice.memory, a, b.self.slot)).toEqual(before);
  });
});
