// Version 1.1 rules of the ring (SPEC 2.7, 2.8): what a peer can draw from us through the words
// it owns is bounded, and a ring read to its end is marked finished by its reader.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChannelError, ChannelReader, ChannelWriter, formatRing, ringSize, type WaitStrategy } from '../../src/channel/index.js';
import { W_CONSUMER_WAIT, W_READER_CLOSED, W_WRITER_CLOSED } from '../../src/channel/layout.js';

const BURST = 64; // SPEC 2.7
const EVERY_MS = 0.02;

/** A doorbell strategy that counts rings and records the wait value each was for. */
function counting(onNotify: () => void): WaitStrategy & { count: number } {
  const s = {
    count: 0,
    wakes: true,
    notify() {
      s.count++;
      onNotify();
    },
    wait: () => new Promise<void>((resolve) => setTimeout(resolve, 1)),
  };
  return s;
}

/** A formatted ring in private memory, and its words. */
function formatted(capacity: number): { memory: ArrayBuffer; words: Uint32Array } {
  const memory = new ArrayBuffer(ringSize(capacity));
  formatRing(memory, { capacity });
  return { memory, words: new Uint32Array(memory) };
}

/** Publishes `count` 8-byte records one by one, the reader draining whenever the ring is full. */
function flood(writer: ChannelWriter, reader: ChannelReader, count: number): void {
  const message = new Uint8Array(8);
  for (let sent = 0; sent < count; ) {
    if (writer.trySend(message)) sent++;
    else reader.drain(() => {});
  }
}

describe('SPEC 2.7: doorbells drawn by the other end\'s wait word are limited, per ring end', () => {
  // The bucket runs on the clock: the test owns it (performance.now() and the timers).
  beforeEach(() => void vi.useFakeTimers({ toFake: ['performance', 'setTimeout', 'clearTimeout'] }));
  afterEach(() => void vi.useRealTimers());

  /** A writer whose consumer announces a fresh sleep after every doorbell (a flooding peer). */
  function flooded(): { words: Uint32Array; writer: ChannelWriter; reader: ChannelReader; strategy: ReturnType<typeof counting>; rung: number[]; stop(): void } {
    const { memory, words } = formatted(4096);
    let flooding = true;
    const rung: number[] = [];
    words[W_CONSUMER_WAIT] = 1;
    const strategy = counting(() => {
      rung.push(words[W_CONSUMER_WAIT]!);
      if (flooding) words[W_CONSUMER_WAIT] = (words[W_CONSUMER_WAIT]! + 2) >>> 0;
    });
    const writer = new ChannelWriter(memory, { wait: strategy, spin: 0 });
    const reader = new ChannelReader(memory, { spin: 0 }); // polls: never rings, never announces
    return { words, writer, reader, strategy, rung, stop: () => (flooding = false) };
  }

  it('with the clock standing still, any number of publishes ring exactly the burst', () => {
    const { writer, reader, strategy } = flooded();
    flood(writer, reader, 10_000);
    expect(strategy.count).toBe(BURST);
  });

  it('a doorbell held back is sent 1 ms after it was held back, not dropped', () => {
    const { words, writer, reader, strategy, rung, stop } = flooded();
    flood(writer, reader, BURST);
    expect(strategy.count).toBe(BURST);
    // An honest consumer now sleeps on a fresh value; the next publish is over the limit.
    stop();
    reader.drain(() => {});
    const sleeping = words[W_CONSUMER_WAIT]!;
    expect(writer.trySend(new Uint8Array(8))).toBe(true);
    expect(strategy.count).toBe(BURST); // held back
    vi.advanceTimersByTime(EVERY_MS * 10); // within the 1 ms: still held back
    expect(strategy.count).toBe(BURST);
    vi.advanceTimersByTime(1);
    expect(strategy.count).toBe(BURST + 1);
    expect(rung.at(-1)).toBe(sleeping);
  });

  it('the closing doorbell is not held back by an empty bucket', () => {
    const { writer, reader, strategy, stop } = flooded();
    flood(writer, reader, BURST);
    stop();
    expect(strategy.count).toBe(BURST);
    writer.close();
    expect(strategy.count).toBe(BURST + 1);
    vi.advanceTimersByTime(10);
    expect(strategy.count).toBe(BURST + 1); // and it was the only one
  });

  it('a held-back doorbell whose device closed meanwhile is dropped quietly, not thrown from a timer', () => {
    const { writer, reader, strategy } = flooded();
    flood(writer, reader, BURST + 1);
    expect(strategy.count).toBe(BURST); // the last one was held back
    let tried = false;
    strategy.notify = () => {
      tried = true;
      throw new Error('ring(): the device is closed');
    };
    expect(() => vi.advanceTimersByTime(1)).not.toThrow();
    expect(tried).toBe(true);
  });
});

describe('SPEC 2.8: a reader at end of stream marks the ring finished', () => {
  it('stores reader-closed once it has read everything after the writer closed', async () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader(memory);
    await writer.send(new Uint8Array([1]));
    writer.close();
    expect(Array.from(await reader.receive())).toEqual([1]);
    expect(words[W_READER_CLOSED]).toBe(0); // not before the end
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(words[W_READER_CLOSED]).toBe(1);
  });

  it('a writer that saw reader-closed keeps the channel closed when the word reads 0 again', () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    words[W_READER_CLOSED] = 1;
    expect(() => writer.trySend(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
    words[W_READER_CLOSED] = 0; // a peer resets it, or the bytes were formatted as another ring
    expect(() => writer.trySend(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
  });

  it('treats any non-zero closed word as closed', async () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    words[W_READER_CLOSED] = 0x8000_0000;
    expect(() => writer.trySend(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
  });
});

describe('SPEC 3.5: a detached end writes nothing to the ring', () => {
  it('reads on, but keeps its head, its wait word and its closed word private', async () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    await writer.send(new Uint8Array([7]));
    const seenWhileWaiting: number[] = [];
    const strategy: WaitStrategy = {
      wakes: true,
      notify() {},
      wait: () => {
        seenWhileWaiting.push(words[W_CONSUMER_WAIT]!);
        return new Promise<void>((resolve) => setTimeout(resolve, 1));
      },
    };
    const reader = new ChannelReader(memory, { wait: strategy, spin: 0 });
    reader.detach();
    const before = words.slice(0, 160);
    expect(Array.from(await reader.receive())).toEqual([7]);
    const next = reader.receive(); // sleeps: the ring is empty
    await new Promise((resolve) => setTimeout(resolve, 5));
    await writer.send(new Uint8Array([8]));
    expect(Array.from(await next)).toEqual([8]);
    writer.close();
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    reader.close();
    expect(seenWhileWaiting.length).toBeGreaterThan(0);
    expect(seenWhileWaiting.every((seq) => seq === 0)).toBe(true);
    const after = words.slice(0, 160);
    // Only the writer's words moved (tail, writer-closed); the consumer's line is untouched.
    expect(after.subarray(96, 160)).toEqual(before.subarray(96, 160));
  });
});

/** Records every Atomics.store into `memory` (index and value) while `body` runs. */
async function storesInto(memory: ArrayBuffer, body: () => Promise<void> | void): Promise<Array<[number, number]>> {
  const stores: Array<[number, number]> = [];
  const original = Atomics.store;
  (Atomics as { store: unknown }).store = (array: Uint32Array, index: number, value: number) => {
    if (array.buffer === memory) stores.push([(array.byteOffset >>> 2) + index, value]);
    return original(array, index, value);
  };
  try {
    await body();
  } finally {
    (Atomics as { store: unknown }).store = original;
  }
  return stores;
}

/** A doorbell strategy whose sleeps end only when the test says so. */
function sleeper(): WaitStrategy & { count: number; asleep: number; wakeAll(): void } {
  let wakers: Array<() => void> = [];
  const s = {
    count: 0,
    asleep: 0,
    wakes: true,
    notify() {
      s.count++;
    },
    wait: (signal: AbortSignal) => {
      s.asleep++;
      return new Promise<void>((resolve) => {
        wakers.push(resolve);
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
    },
    wakeAll() {
      const all = wakers;
      wakers = [];
      for (const wake of all) wake();
    },
  };
  return s;
}

describe('SPEC 2.8: an end that stored its closed word writes nothing more into the ring', () => {
  it('a reader finished at EOF and closed later leaves a ring formatted again at the same bytes alone', async () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader(memory, { wait: sleeper(), spin: 0 });
    writer.close();
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(words[W_READER_CLOSED]).toBe(1);
    // The owner reuses the bytes (first fit puts the next ring at the same place).
    formatRing(memory, { capacity: 1024 });
    const strategy = sleeper();
    const next = new ChannelWriter(memory, { wait: strategy });
    const before = words.slice();
    reader.close(); // the application closes the old reader afterwards
    expect(words).toEqual(before);
    expect(strategy.count).toBe(0);
    expect(next.trySend(new Uint8Array([1]))).toBe(true);
  });

  it('a reader finished at EOF does not read a ring formatted again at the same bytes', async () => {
    const { memory } = formatted(1024);
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader(memory);
    writer.close();
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    formatRing(memory, { capacity: 1024, position: 4096 });
    const next = new ChannelWriter(memory);
    expect(next.trySend(new Uint8Array([9]))).toBe(true);
    expect(reader.tryReceive()).toBeUndefined();
    expect(reader.done).toBe(true);
    expect(reader.available).toBe(0);
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(reader.failure).toBeNull();
  });

  it('a sleeping reader that finds EOF on its last look puts its wait word back before it stores reader-closed', async () => {
    const { memory } = formatted(1024);
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader(memory, { wait: sleeper(), spin: 0 });
    // The writer's VM closes right after the reader announced its sleep, before its last look
    // (the seq-cst look): that look finds EOF. The window is a few instructions wide, so the
    // test lands the other VM's store in it through the look's own switch.
    let strict = false;
    Object.defineProperty(reader, 'strict', {
      get: () => strict,
      set: (value: boolean) => {
        if (value) Atomics.store(new Uint32Array(memory), W_WRITER_CLOSED, 1);
        strict = value;
      },
    });
    const stores = await storesInto(memory, () => expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
    const closedAt = stores.findIndex(([index, value]) => index === W_READER_CLOSED && value === 1);
    expect(closedAt).toBeGreaterThan(0);
    expect(stores.slice(closedAt + 1)).toEqual([]);
    expect(stores.filter(([index]) => index === W_CONSUMER_WAIT).map(([, value]) => value % 2)).toEqual([1, 0]);
    void writer;
  });

  it('a writer closed while a send sleeps for space stores nothing after writer-closed', async () => {
    const { memory } = formatted(1024);
    const strategy = sleeper();
    const writer = new ChannelWriter(memory, { wait: strategy, spin: 0 });
    new ChannelReader(memory); // attached, reads nothing: the ring fills
    while (writer.trySend(new Uint8Array(100)));
    const stores = await storesInto(memory, async () => {
      const pending = writer.send(new Uint8Array(100));
      await new Promise((resolve) => setImmediate(resolve));
      expect(strategy.asleep).toBe(1);
      writer.close();
      await expect(pending).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    });
    const closedAt = stores.findIndex(([index, value]) => index === W_WRITER_CLOSED && value === 1);
    expect(closedAt).toBeGreaterThan(0);
    expect(stores.slice(closedAt + 1)).toEqual([]);
  });

  it('a reader detached while asleep does not store its wait word when it wakes', async () => {
    const { memory, words } = formatted(1024);
    const writer = new ChannelWriter(memory);
    const strategy = sleeper();
    const reader = new ChannelReader(memory, { wait: strategy, spin: 0 });
    const next = reader.receive();
    await new Promise((resolve) => setImmediate(resolve));
    expect(strategy.asleep).toBe(1);
    expect(words[W_CONSUMER_WAIT]! % 2).toBe(1); // announced
    reader.detach(); // the writer's peer went down (SPEC 3.5)
    const stores = await storesInto(memory, async () => {
      strategy.wakeAll();
      await new Promise((resolve) => setImmediate(resolve));
    });
    expect(stores).toEqual([]);
    reader.abandon(new ChannelError('ERR_IVSHMEM_PEER_GONE', 'gone'));
    await expect(next).rejects.toBeDefined();
    void writer;
  });
});
