// Bad arguments to the channel layer and the doorbell strategy are typed errors at the call,
// aborts look like Node's own (AbortError, code 'ABORT_ERR'), and closing the device under a
// sleeping channel end fails it with a typed error.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChannelReader,
  ChannelWriter,
  connect,
  deviceWaitStrategy,
  IvshmemServer,
  openFile,
  ringSize,
} from '../../src/index.js';
import { RING_HEADER_SIZE, RING_MAX_CAPACITY, RING_MIN_CAPACITY } from '../../src/spec/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const invalid = { code: 'ERR_IVSHMEM_INVALID_ARGUMENT' };

async function serverPair() {
  const socket = shmPath('sock');
  const server = await IvshmemServer.listen({ socket, size: 1 << 16, vectors: 1 });
  cleanup.push(() => server.close());
  const a = await connect(socket);
  const b = await connect(socket);
  cleanup.push(() => (a.close(), b.close()));
  return { a, b };
}

describe('ringSize()', () => {
  it.each([-1, 100, NaN, 2 ** 31, 0, 63, 1.5, Infinity, RING_MAX_CAPACITY * 2, '64' as unknown as number])(
    'refuses capacity %s with ERR_IVSHMEM_INVALID_ARGUMENT',
    (capacity) => {
      expect(() => ringSize(capacity)).toThrow(expect.objectContaining({ ...invalid, message: expect.stringContaining('capacity') }));
    },
  );

  it('adds the header to every capacity a ring can have', () => {
    expect(ringSize(RING_MIN_CAPACITY)).toBe(RING_HEADER_SIZE + RING_MIN_CAPACITY);
    expect(ringSize(1 << 16)).toBe(RING_HEADER_SIZE + (1 << 16));
    expect(ringSize(RING_MAX_CAPACITY)).toBe(RING_HEADER_SIZE + RING_MAX_CAPACITY);
  });
});

describe('channel options', () => {
  it.each([42, 'poll', {}, { wait: () => Promise.resolve(), wakes: false }, null])('refuses wait: %o', (wait) => {
    const memory = new ArrayBuffer(ringSize(1024));
    const options = { wait: wait as never, format: true };
    expect(() => new ChannelWriter(memory, options)).toThrow(expect.objectContaining({ ...invalid, message: expect.stringContaining('wait') }));
    new ChannelWriter(memory, { format: true }).close();
    expect(() => new ChannelReader(memory, { wait: wait as never })).toThrow(expect.objectContaining(invalid));
  });
});

describe('deviceWaitStrategy()', () => {
  it('refuses a device without doorbells (a file) with ERR_IVSHMEM_NO_DOORBELL', () => {
    const path = shmPath('file');
    const dev = openFile(path, { size: 4096, create: true });
    cleanup.push(() => (dev.close(), rmSync(path, { force: true })));
    expect(() => deviceWaitStrategy(dev, { peer: 1 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_NO_DOORBELL' }));
  });

  it.each([
    [{ peer: 99999 }, 'peer'],
    [{ peer: -1 }, 'peer'],
    [{ peer: 1.5 }, 'peer'],
    [{ peer: undefined as unknown as number }, 'peer'],
    [{ peer: 1, vector: 1 }, 'vector'],
    [{ peer: 1, vector: -1 }, 'vector'],
    [{ peer: 1, recheck: -1 }, 'recheck'],
    [{ peer: 1, recheck: NaN }, 'recheck'],
  ])('refuses %o naming %s', async (options, name) => {
    const { a } = await serverPair();
    expect(() => deviceWaitStrategy(a, options)).toThrow(expect.objectContaining({ ...invalid, message: expect.stringContaining(name) }));
  });
});

describe('aborts', () => {
  it('reject with an AbortError with code ABORT_ERR, the signal\'s reason as its cause', async () => {
    const memory = new ArrayBuffer(ringSize(1024));
    const writer = new ChannelWriter(memory, { format: true });
    const reader = new ChannelReader(memory, {});
    const controller = new AbortController();
    const pending = reader.receive({ signal: controller.signal });
    controller.abort();
    const error = await pending.catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: controller.signal.reason });
    expect(error).toBeInstanceOf(Error);
    // Already aborted: the same, at once.
    await expect(reader.receive({ signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    writer.close();
  });

  it('on a doorbell wait and a device interrupt wait', async () => {
    const { a, b } = await serverPair();
    const memory = a.memory;
    const writer = new ChannelWriter(memory, { size: ringSize(1024), format: true, wait: deviceWaitStrategy(a, { peer: b.id }) });
    const reader = new ChannelReader(b.memory, { size: ringSize(1024), wait: deviceWaitStrategy(b, { peer: a.id }) });
    const controller = new AbortController();
    const receiving = reader.receive({ signal: controller.signal });
    const interrupt = a.waitInterrupt(0, { signal: controller.signal });
    controller.abort(new Error('stop'));
    for (const pending of [receiving, interrupt]) {
      await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: new Error('stop') });
    }
    writer.close();
  });
});

describe('closing the device under a sleeping channel end', () => {
  it('fails the pending receive() with a typed channel error, not a TypeError', async () => {
    const { a, b } = await serverPair();
    new ChannelWriter(a.memory, { size: ringSize(1024), format: true, wait: deviceWaitStrategy(a, { peer: b.id }) });
    const reader = new ChannelReader(b.memory, { size: ringSize(1024), wait: deviceWaitStrategy(b, { peer: a.id }), spin: 0 });
    const pending = reader.receive();
    // Let it announce its sleep and wait for the doorbell.
    await new Promise((r) => setTimeout(r, 20));
    b.close();
    await expect(pending).rejects.toMatchObject({ name: 'ChannelError', code: expect.stringMatching(/^ERR_IVSHMEM_(CHANNEL_)?CLOSED$/) });
  });
});
