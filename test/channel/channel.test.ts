import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  ChannelError,
  ChannelReader,
  ChannelWriter,
  createChannel,
  deviceWaitStrategy,
  formatRing,
  jsonCodec,
  RING_HEADER_SIZE,
  ringSize,
  utf8Codec,
  type Codec,
  type WaitStrategy,
} from '../../src/channel/index.js';
import { W_HEAD_HI, W_HEAD_LO, W_TAIL_HI, W_TAIL_LO } from '../../src/channel/layout.js';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);

describe('channel basics', () => {
  it('sends and receives bytes in order', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(1024)));
    expect(writer.capacity).toBe(1024);
    expect(writer.maxMessageSize).toBe(1016);
    expect(writer.trySend(bytes(1, 2, 3))).toBe(true);
    expect(writer.trySend(bytes())).toBe(true);
    expect(writer.trySend(bytes(9))).toBe(true);
    expect(reader.tryReceive()).toEqual(bytes(1, 2, 3));
    expect(reader.tryReceive()).toEqual(bytes());
    expect(reader.tryReceive()).toEqual(bytes(9));
    expect(reader.tryReceive()).toBeUndefined();
    expect(reader.done).toBe(false);
  });

  it('returns copies, not views of shared memory', () => {
    const memory = new ArrayBuffer(ringSize(256));
    const { writer, reader } = createChannel(memory);
    writer.trySend(bytes(7, 7));
    const got = reader.tryReceive()!;
    expect(got.buffer).not.toBe(memory);
  });

  it('carries utf8 and json', () => {
    const memory = new ArrayBuffer(ringSize(4096));
    const text = createChannel(memory, { codec: utf8Codec });
    text.writer.trySend('héllo, wörld ✓ 🚀');
    text.writer.trySend('');
    expect(text.reader.tryReceive()).toBe('héllo, wörld ✓ 🚀');
    expect(text.reader.tryReceive()).toBe('');
    const json = createChannel<unknown>(memory, { codec: jsonCodec() });
    const value = { a: [1, 2, { b: 'c' }], n: null, t: true };
    json.writer.trySend(value);
    json.writer.trySend(null);
    json.writer.trySend(42);
    expect(json.reader.tryReceive()).toEqual(value);
    expect(json.reader.tryReceive()).toBeNull();
    expect(json.reader.tryReceive()).toBe(42);
    expect(() => json.writer.trySend(undefined)).toThrow(TypeError);
  });

  it('sends a changed object afresh (json caches nothing stale)', () => {
    const { writer, reader } = createChannel<{ n: number }>(new ArrayBuffer(ringSize(128)), { codec: jsonCodec() });
    const value = { n: 0 };
    let sent = 0;
    while (writer.trySend(value)) value.n = ++sent;
    value.n = 1000;
    const seen: number[] = [];
    while (!writer.trySend(value)) seen.push(reader.tryReceive()!.n);
    for (let v; (v = reader.tryReceive()) !== undefined; ) seen.push(v.n);
    expect(seen).toEqual([...Array.from({ length: sent + 1 }, (_, i) => i).slice(0, sent), 1000]);
    expect(seen.at(-1)).toBe(1000);
  });

  it('accepts long utf8 strings whose 3-byte bound exceeds the ring', () => {
    const { writer, reader } = createChannel<string>(new ArrayBuffer(ringSize(128)), { codec: utf8Codec });
    const text = 'x'.repeat(100); // bound 300 > 120, real 100
    expect(writer.trySend(text)).toBe(true);
    expect(reader.tryReceive()).toBe(text);
    expect(() => writer.trySend('x'.repeat(121))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_MESSAGE_TOO_LARGE' }));
  });

  it('supports user codecs with encode or encodeInto, and record types', () => {
    const memory = new ArrayBuffer(ringSize(256));
    const simple: Codec<number> = {
      encode: (n) => Uint8Array.of(n),
      decode: (b, offset, length, type) => b[offset]! + type * 1000 + length * 0,
    };
    const c1 = createChannel(memory, { codec: simple });
    c1.writer.trySend(5, 3);
    expect(c1.reader.tryReceive()).toBe(3005);
    let view: DataView | null = null;
    const f64: Codec<number> = {
      maxSize: () => 8,
      encodeInto(n, target, offset) {
        view ??= new DataView(target.buffer, target.byteOffset, target.byteLength);
        view.setFloat64(offset, n, true);
        return 8;
      },
      decode: (b, offset) => new DataView(b.buffer, b.byteOffset).getFloat64(offset, true),
    };
    const c2 = createChannel(memory, { codec: f64 });
    c2.writer.trySend(Math.PI);
    expect(c2.reader.tryReceive()).toBe(Math.PI);
    expect(() => c2.writer.trySend(1, 70000)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
  });

  it('reports full rings and refuses messages larger than the ring', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(128)));
    const m = new Uint8Array(24); // 32-byte records
    expect([writer.trySend(m), writer.trySend(m), writer.trySend(m), writer.trySend(m)]).toEqual([true, true, true, true]);
    expect(writer.trySend(m)).toBe(false);
    expect(writer.free).toBe(0);
    reader.tryReceive();
    expect(writer.trySend(m)).toBe(true);
    expect(writer.trySend(new Uint8Array(0))).toBe(false);
    const big = new Uint8Array(121);
    const error = (() => {
      try {
        writer.trySend(big);
      } catch (e) {
        return e as ChannelError;
      }
    })();
    expect(error).toBeInstanceOf(ChannelError);
    expect(error!.code).toBe('ERR_IVSHMEM_MESSAGE_TOO_LARGE');
    expect(error!.message).toMatch(/121-byte message .*at most 120 bytes/);
  });

  it('inserts padding instead of wrapping a record, including the largest one', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(128)));
    const seen: number[] = [];
    for (let round = 0; round < 50; round++) {
      const size = [40, 120, 0, 7, 64, 100][round % 6]!;
      const m = new Uint8Array(size).fill(round);
      while (!writer.trySend(m)) {
        const got = reader.tryReceive();
        if (got) seen.push(got.length);
      }
    }
    for (let got; (got = reader.tryReceive()); ) seen.push(got.length);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, round) => [40, 120, 0, 7, 64, 100][round % 6]));
  });

  it('validates the geometry when attaching', () => {
    const memory = new ArrayBuffer(4096);
    expect(() => new ChannelReader(memory)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'magic' }));
    formatRing(memory, { offset: 128, size: 2048 });
    expect(() => new ChannelReader(memory, { offset: 128, size: 1000 })).toThrow(expect.objectContaining({ field: 'capacity' }));
    expect(() => new ChannelReader(memory, { offset: 3, size: 1000 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
    expect(() => new ChannelReader(memory, { offset: 4000, size: 1000 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
    const u32 = new Uint32Array(memory, 128, 8);
    u32[1] = 2;
    expect(() => new ChannelWriter(memory, { offset: 128, size: 2048 })).toThrow(expect.objectContaining({ field: 'version' }));
    expect(() => formatRing(memory, { offset: 128, size: 300 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_SIZE' }));
    expect(formatRing(memory, { offset: 128, size: 2048 })).toBe(1024);
    expect(new ChannelWriter(memory, { offset: 128, size: 2048 }).capacity).toBe(1024);
    expect(RING_HEADER_SIZE).toBe(640);
  });

  it('crosses the 2^32 boundary of the low position word', () => {
    const memory = new ArrayBuffer(ringSize(256));
    const start = 2 ** 32 - 256;
    formatRing(memory, { position: start });
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader(memory);
    for (let i = 0; i < 100; i++) {
      expect(writer.trySend(bytes(i, i >> 8, 1, 2, 3))).toBe(true);
      expect(reader.tryReceive()).toEqual(bytes(i, i >> 8, 1, 2, 3));
    }
    const u32 = new Uint32Array(memory, 0, RING_HEADER_SIZE / 4);
    const head = u32[W_HEAD_HI]! * 2 ** 32 + u32[W_HEAD_LO]!;
    const tail = u32[W_TAIL_HI]! * 2 ** 32 + u32[W_TAIL_LO]!;
    expect(head).toBe(tail);
    expect(head).toBeGreaterThan(2 ** 32);
    expect(head).toBe(start + 100 * 16);
  });
});

describe('zero-copy and batches', () => {
  it('claims, commits and aborts', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
    const view = writer.tryClaim(16)!;
    view.set([1, 2, 3, 4]);
    expect(() => writer.trySend(bytes(1))).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_BUSY' }));
    writer.commit(4, 9);
    const seen: Array<[number[], number]> = [];
    reader.drain((b, offset, length, type) => seen.push([[...b.subarray(offset, offset + length)], type]));
    expect(seen).toEqual([[[1, 2, 3, 4], 9]]);
    writer.tryClaim(8)!.fill(5);
    writer.abort();
    expect(reader.tryReceive()).toBeUndefined();
    expect(() => writer.commit()).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
    expect(() => writer.tryClaim(249)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_MESSAGE_TOO_LARGE' }));
  });

  it('drains without consuming beyond max and releases space', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
    for (let i = 0; i < 10; i++) writer.trySend(bytes(i));
    let sum = 0;
    expect(reader.drain((b, o) => (sum += b[o]!), 4)).toBe(4);
    expect(sum).toBe(0 + 1 + 2 + 3);
    expect(reader.drain((b, o) => (sum += b[o]!))).toBe(6);
    expect(sum).toBe(45);
    expect(writer.free).toBe(256);
  });

  it('counts a record whose drain callback throws as received', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
    writer.trySend(bytes(1));
    writer.trySend(bytes(2));
    expect(() => reader.drain(() => {
      throw new Error('boom');
    })).toThrow('boom');
    expect(reader.tryReceive()).toEqual(bytes(2));
  });

  it('sends batches with one wake-up per publish', async () => {
    let notified = 0;
    const wait: WaitStrategy = { wakes: true, notify: () => notified++, wait: () => new Promise((r) => setImmediate(r)) };
    const memory = new ArrayBuffer(ringSize(1024));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { wait, spin: 0 });
    const reader = new ChannelReader(memory, { wait, spin: 0 });
    const got: number[] = [];
    const receiving = (async () => {
      for await (const m of reader) got.push(m[0]!);
    })();
    await new Promise((r) => setImmediate(r));
    const values = Array.from({ length: 20 }, (_, i) => bytes(i));
    expect(await writer.sendBatch(values)).toBe(20);
    expect(notified).toBe(1);
    writer.close();
    await receiving;
    expect(got).toEqual(values.map((v) => v[0]));
  });
});

describe('batch fast paths', () => {
  it('sends arrays and other iterables larger than the ring, in order, with backpressure', async () => {
    for (const iterable of [false, true]) {
      const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
      const values = Array.from({ length: 300 }, (_, i) => bytes(i & 0xff, i >> 8, 1, 2, 3, 4, 5, 6, 7));
      const got: number[] = [];
      const receiving = (async () => {
        for await (const m of reader) got.push(m[0]! | (m[1]! << 8));
      })();
      const source = iterable ? (function* () { yield* values; })() : values;
      expect(await writer.sendBatch(source, { type: 3 })).toBe(300);
      writer.close();
      await receiving;
      expect(got).toEqual(values.map((_, i) => i));
    }
  });

  it('publishes what it sent before an abort while the ring is full', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
    const values = Array.from({ length: 40 }, (_, i) => bytes(i));
    const abort = new AbortController();
    const sending = writer.sendBatch(values, { signal: abort.signal });
    setTimeout(() => abort.abort(new Error('enough')), 5);
    await expect(sending).rejects.toThrow('enough');
    const got: number[] = [];
    reader.drain((b, o) => got.push(b[o]!));
    expect(got).toEqual(values.slice(0, 16).map((v) => v[0]));
  });

  it('refuses a value that is not bytes without sending the ones after it', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)));
    await expect(writer.sendBatch([bytes(1), 'no' as unknown as Uint8Array, bytes(2)])).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' });
    expect(reader.tryReceive()).toEqual(bytes(1));
    expect(reader.tryReceive()).toBeUndefined();
  });

  it('ready() answers without consuming, also when the spin finds the message', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(256)), { spin: 200 });
    writer.trySend(bytes(1));
    expect(await reader.ready()).toBe(true);
    expect(await reader.ready()).toBe(true);
    expect(reader.tryReceive()).toEqual(bytes(1));
    const later = reader.ready();
    writer.trySend(bytes(2));
    expect(await later).toBe(true);
    expect(reader.tryReceive()).toEqual(bytes(2));
    writer.close();
    expect(await reader.ready()).toBe(false);
    reader.close();
    await expect(reader.ready()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
  });

  it('receives bytes as plain Uint8Array copies', () => {
    const memory = new ArrayBuffer(ringSize(256));
    const { writer, reader } = createChannel(memory);
    writer.trySend(Buffer.from([4, 5, 6]));
    const got = reader.tryReceive()!;
    expect(got.constructor).toBe(Uint8Array);
    new Uint8Array(memory).fill(0);
    expect([...got]).toEqual([4, 5, 6]);
  });
});

describe('waiting, EOF and closing', () => {
  it('applies backpressure and delivers everything in order', async () => {
    const { writer, reader } = createChannel<string>(new ArrayBuffer(ringSize(256)), { codec: utf8Codec });
    const n = 2000;
    const sending = (async () => {
      for (let i = 0; i < n; i++) await writer.send(`message ${i}`);
      writer.close();
    })();
    const got: string[] = [];
    for await (const m of reader) got.push(m);
    await sending;
    expect(got.length).toBe(n);
    expect(got[1234]).toBe('message 1234');
    expect(reader.done).toBe(true);
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(() => writer.trySend('x')).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
  });

  it('wakes a sleeping reader exactly through the announced flag', async () => {
    let writerSide: WaitStrategy | null = null;
    let wake: (() => void) | null = null;
    let rings = 0;
    const readerWait: WaitStrategy = { wakes: true, notify() {}, wait: () => new Promise<void>((r) => (wake = r)) };
    writerSide = { wakes: true, notify: () => (rings++, wake?.()), wait: () => new Promise((r) => setTimeout(r, 1)) };
    const memory = new ArrayBuffer(ringSize(256));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { wait: writerSide, spin: 0 });
    const reader = new ChannelReader(memory, { wait: readerWait, spin: 0 });
    writer.trySend(bytes(1));
    expect(rings).toBe(0); // nobody sleeps: no doorbell
    expect(await reader.receive()).toEqual(bytes(1));
    const pending = reader.receive();
    await new Promise((r) => setImmediate(r));
    writer.trySend(bytes(2));
    writer.trySend(bytes(3));
    expect(rings).toBe(1); // one doorbell per sleep
    expect(await pending).toEqual(bytes(2));
    expect(await reader.receive()).toEqual(bytes(3));
  });

  it('rejects a pending receive on abort and on close', async () => {
    const { reader } = createChannel(new ArrayBuffer(ringSize(256)), { spin: 0 });
    const controller = new AbortController();
    const pending = reader.receive({ signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
    const pending2 = reader.receive();
    reader.close();
    await expect(pending2).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
  });

  it('rejects doorbell waits on abort and on close, one signal at a time', async () => {
    const device = Object.assign(new EventEmitter(), { ring: () => {} });
    const wait = deviceWaitStrategy(device as never, { peer: 1, recheck: 0 });
    const memory = new ArrayBuffer(ringSize(256));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { spin: 0 });
    const reader = new ChannelReader(memory, { wait, spin: 0 });
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController();
      const pending = reader.receive({ signal: controller.signal });
      await new Promise((r) => setImmediate(r));
      controller.abort(new Error(`stop ${i}`));
      await expect(pending).rejects.toThrow(`stop ${i}`);
    }
    const woken = reader.receive();
    await new Promise((r) => setImmediate(r));
    writer.trySend(bytes(7));
    device.emit('interrupt', 0);
    expect(await woken).toEqual(bytes(7));
    const pending = reader.receive();
    await new Promise((r) => setImmediate(r));
    reader.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
  });

  it('a parked doorbell wait gives its sleep back on abort, and finds a publish nobody rang for by its re-check', async () => {
    const device = Object.assign(new EventEmitter(), { ring: () => {} });
    const memory = new ArrayBuffer(ringSize(256));
    formatRing(memory);
    const consumerWait = new Uint32Array(memory)[128]!;
    const reader = new ChannelReader(memory, { wait: deviceWaitStrategy(device as never, { peer: 1, recheck: 5 }), spin: 0 });
    const controller = new AbortController();
    const aborted = reader.receive({ signal: controller.signal });
    await new Promise((r) => setImmediate(r));
    expect(new Uint32Array(memory)[128]! & 1).toBe(1); // asleep: ring me
    controller.abort(new Error('stop'));
    await expect(aborted).rejects.toThrow('stop');
    expect(new Uint32Array(memory)[128]! & 1).toBe(0);
    expect(new Uint32Array(memory)[128]).not.toBe(consumerWait);
    // A writer that publishes without ringing (as a dropped doorbell looks): no interrupt ever
    // comes, the strategy's re-check finds the record.
    const silent = new ChannelWriter(memory, { spin: 0 });
    const woken = reader.receive();
    await new Promise((r) => setImmediate(r));
    silent.trySend(bytes(9));
    expect(await woken).toEqual(bytes(9));
    expect(new Uint32Array(memory)[128]! & 1).toBe(0);
  });

  it('fails the writer when the reader closed', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(128)), { spin: 0 });
    const m = new Uint8Array(56);
    await writer.send(m);
    await writer.send(m);
    const blocked = writer.send(m);
    reader.close();
    await expect(blocked).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(() => writer.trySend(m)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' }));
  });

  it('rejects a pending send when the writer is closed', async () => {
    const { writer } = createChannel(new ArrayBuffer(ringSize(64)), { spin: 0 });
    await writer.send(new Uint8Array(56));
    const blocked = writer.send(new Uint8Array(56));
    writer.close();
    await expect(blocked).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
  });

  it('claim waits for space', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(64)), { spin: 5 });
    writer.trySend(new Uint8Array(40));
    const claiming = writer.claim(40);
    await new Promise((r) => setTimeout(r, 5));
    reader.tryReceive();
    const view = await claiming;
    view.fill(3);
    writer.commit();
    expect(reader.tryReceive()).toEqual(new Uint8Array(40).fill(3));
  });
});

describe('doorbell wait strategy', () => {
  it('rings only a sleeping peer, once per sleep, and wakes it', async () => {
    const { EventEmitter } = await import('node:events');
    const { deviceWaitStrategy } = await import('../../src/channel/index.js');
    const rings: Array<[number, number]> = [];
    class FakeDevice extends EventEmitter {
      other: FakeDevice | null = null;
      ring(peer: number, vector = 0): void {
        rings.push([peer, vector]);
        queueMicrotask(() => this.other!.emit('interrupt', vector, 1));
      }
    }
    const a = new FakeDevice();
    const b = new FakeDevice();
    a.other = b;
    b.other = a;
    const memory = new ArrayBuffer(ringSize(256));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { wait: deviceWaitStrategy(a as never, { peer: 1, vector: 2 }), spin: 0 });
    const reader = new ChannelReader(memory, { wait: deviceWaitStrategy(b as never, { peer: 0, vector: 2 }), spin: 0 });
    writer.trySend(bytes(1));
    expect(rings).toEqual([]);
    expect(await reader.receive()).toEqual(bytes(1));
    const pending = reader.receive();
    await new Promise((r) => setImmediate(r));
    expect(b.listenerCount('interrupt')).toBe(1);
    writer.trySend(bytes(2));
    writer.trySend(bytes(3));
    expect(rings).toEqual([[1, 2]]);
    expect(await pending).toEqual(bytes(2));
    // A full ring: the writer sleeps and the reader rings it back.
    const m = new Uint8Array(56);
    while (writer.trySend(m));
    const sending = writer.send(m);
    await new Promise((r) => setImmediate(r));
    reader.tryReceive();
    reader.tryReceive(); // the next record needs padding plus itself: two records' room
    await sending;
    expect(rings).toEqual([[1, 2], [0, 2]]);
    writer.close();
    reader.close();
  });
});

describe('a writer closed with an error (SPEC 2.8, writer-closed = 2)', () => {
  it('stays an abort for a reader that finished, even once the ring bytes are formatted anew', async () => {
    const memory = new ArrayBuffer(ringSize(4096));
    const { reader, writer } = createChannel(memory);
    writer.trySend(bytes(1));
    writer.close({ error: true });
    expect(reader.tryReceive()).toEqual(bytes(1));
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' });
    // The owner reuses the bytes for a new ring (writer-closed 0): the finished reader must not
    // read it to decide how its own channel ended.
    formatRing(memory);
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' });
    expect(() => reader.receiveSync()).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' }));
  });
});
