// Defects a review found, each shown failing before its fix.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ChannelError, ChannelReader, ChannelWriter, createChannel, deviceWaitStrategy, formatRing, jsonCodec, RING_HEADER_SIZE, type DoorbellDevice } from '../../src/channel/index.js';

// Two in-process "devices": ring() raises an interrupt on the other one a turn later, as an
// eventfd would; no periodic re-check, so a lost wake-up hangs.
function linkedDevices() {
  const a = Object.assign(new EventEmitter(), { rings: 0 }) as EventEmitter & { rings: number; ring(p: number, v: number): void; waitInterrupt(v: number, o?: { signal?: AbortSignal }): Promise<number> };
  const b = Object.assign(new EventEmitter(), { rings: 0 }) as typeof a;
  for (const [self, other] of [[a, b], [b, a]] as const) {
    self.ring = (_peer, vector) => {
      self.rings++;
      setImmediate(() => other.emit('interrupt', vector));
    };
    self.waitInterrupt = (vector, options = {}) =>
      new Promise((resolve, reject) => {
        const on = (v: number): void => {
          if (v !== vector) return;
          self.off('interrupt', on);
          resolve(1);
        };
        self.on('interrupt', on);
        options.signal?.addEventListener('abort', () => {
          self.off('interrupt', on);
          reject(options.signal!.reason);
        }, { once: true });
      });
  }
  return { a, b };
}

const within = <T>(p: Promise<T>, ms = 2000): Promise<T> =>
  Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms))]);

describe('channel regressions', () => {
  it('wakes a second concurrent receive after the first took the message', async () => {
    const { a, b } = linkedDevices();
    const memory = new ArrayBuffer(RING_HEADER_SIZE + 256);
    formatRing(memory);
    const writer = new ChannelWriter(memory, { spin: 0, wait: deviceWaitStrategy(a as unknown as DoorbellDevice, { peer: 1, recheck: 0 }) });
    const reader = new ChannelReader(memory, { spin: 0, wait: deviceWaitStrategy(b as unknown as DoorbellDevice, { peer: 0, recheck: 0 }) });
    const first = reader.receive();
    const second = reader.receive();
    await new Promise((r) => setTimeout(r, 10));
    writer.trySend(new Uint8Array([1]));
    expect((await within(first))[0]).toBe(1);
    await new Promise((r) => setTimeout(r, 10));
    writer.trySend(new Uint8Array([2]));
    expect((await within(second))[0]).toBe(2);
  });

  it('publishes sends in call order, also when nobody awaits them', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(RING_HEADER_SIZE + 128));
    const m = (n: number, tag: number): Uint8Array => new Uint8Array(n).fill(tag);
    await writer.send(m(40, 1));
    await writer.send(m(40, 2));
    reader.tryReceive();
    const pending = [writer.send(m(56, 3)), writer.send(m(8, 4))];
    expect(writer.trySend(m(8, 5))).toBe(false);
    const got: number[] = [];
    for (let i = 0; i < 3; i++) got.push((await reader.receive())[0]!);
    await Promise.all(pending);
    expect(got).toEqual([2, 3, 4]);
  });

  it('stops a batch at close(): nothing is published after the writer-closed flag', async () => {
    const memory = new ArrayBuffer(RING_HEADER_SIZE + 256);
    const { writer, reader } = createChannel(memory);
    function* values() {
      for (let i = 0; i < 100; i++) yield new Uint8Array(56).fill(i);
    }
    const batch = writer.sendBatch(values());
    await new Promise((r) => setTimeout(r, 5));
    writer.close();
    await expect(batch).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    const tail = new Uint32Array(memory)[32]!;
    let n = 0;
    while (reader.tryReceive()) n++;
    expect(reader.done).toBe(true);
    expect(n * 64).toBe(tail);
  });

  it('consumes a record its codec cannot decode and reports it typed, then goes on', () => {
    const memory = new ArrayBuffer(RING_HEADER_SIZE + 256);
    formatRing(memory);
    // A writer that sends bytes, a reader that expects JSON.
    const writer = new ChannelWriter(memory);
    const reader = new ChannelReader<unknown>(memory, { codec: jsonCodec() });
    writer.trySend(new TextEncoder().encode('{{{'));
    writer.trySend(new TextEncoder().encode('42'));
    expect(() => reader.tryReceive()).toThrow(expect.objectContaining({ name: 'ChannelError', code: 'ERR_IVSHMEM_DECODE' }));
    expect(reader.tryReceive()).toBe(42);
    expect(reader.failure).toBeNull();
  });

  it('refuses padding at the start of the data area instead of looping on it', () => {
    const memory = new ArrayBuffer(RING_HEADER_SIZE + 128);
    const { reader } = createChannel(memory);
    const u32 = new Uint32Array(memory);
    const data = RING_HEADER_SIZE / 4;
    u32[data] = 120;
    u32[data + 1] = 0xffffffff;
    Atomics.store(u32, 32, 128);
    expect(() => reader.tryReceive()).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'padding' }));
  });

  it('answers getters with a typed error once the memory is gone', async () => {
    const { native } = await import('../../src/native.js');
    const fd = native.memfdCreate('regress');
    native.ftruncate(fd, 4096);
    const memory = native.map(fd, 0, 4096, true);
    const { writer, reader } = createChannel(memory);
    native.unmap(memory);
    native.close(fd);
    expect(() => writer.free).toThrow(ChannelError);
    expect(() => reader.available).toThrow(ChannelError);
  });
});
