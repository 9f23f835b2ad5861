// Friction found while measuring (issue 10): an end that attaches before the ring is formatted,
// and options a wait strategy silently ignored.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelReader, ChannelWriter, deviceWaitStrategy, formatRing, pollingWaitStrategy, ringSize, type DoorbellDevice } from '../../src/channel/index.js';
import { openFile } from '../../src/device/file.js';
import { child, exitCode, shmPath } from '../helpers.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function shm(size: number): { path: string; memory: ArrayBuffer } {
  const path = shmPath('open');
  const device = openFile(path, { size, create: true });
  cleanup.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return { path, memory: device.memory };
}

describe('ChannelReader.open / ChannelWriter.open', () => {
  it('waits for another process to format the ring instead of failing on the magic', async () => {
    const size = ringSize(4096);
    const { path, memory } = shm(size);
    // Before: the constructor throws CORRUPT(magic), which open() waits out.
    expect(() => new ChannelReader(memory, { size })).toThrow(expect.objectContaining({ field: 'magic' }));
    const opening = ChannelReader.open(memory, { size, timeout: 30_000 });
    // The channel-peer writer formats (format: true) and sends 3 messages.
    const writer = child('channel-peer.mjs', ['writer', path, '0', '3', 'format']);
    const reader = await opening;
    let got = 0;
    for await (const msg of reader) {
      expect(msg.byteLength).toBeGreaterThanOrEqual(8);
      got++;
    }
    expect(got).toBe(3);
    expect(await exitCode(writer)).toBe(0);
  }, 60_000);

  it('times out with a typed error that says what is missing', async () => {
    const { memory } = shm(ringSize(4096));
    await expect(ChannelWriter.open(memory, { timeout: 20 })).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_TIMEOUT',
      message: expect.stringMatching(/not formatted within 20 ms \(magic is 0\)/),
    });
  });

  it('rejects at once on a formatted ring with a broken header, and on abort', async () => {
    const { memory } = shm(ringSize(4096));
    formatRing(memory);
    new Uint32Array(memory)[1] = 7; // major version 7
    await expect(ChannelReader.open(memory, { timeout: 60_000 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'version' });
    const blank = new ArrayBuffer(ringSize(64));
    const controller = new AbortController();
    const opening = ChannelReader.open(blank, { signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(opening).rejects.toThrow('stop');
  });

  it('attaches at once when the ring is already formatted', async () => {
    const memory = new ArrayBuffer(ringSize(64));
    formatRing(memory);
    const writer = await ChannelWriter.open(memory);
    expect(writer.trySend(Uint8Array.of(5))).toBe(true);
    expect([...(await ChannelReader.open(memory)).tryReceive()!]).toEqual([5]);
  });
});

describe('wait strategy options', () => {
  const device = { ring() {}, on() {}, off() {} } as unknown as DoorbellDevice;

  it('deviceWaitStrategy refuses unknown options (spin was accepted and ignored) and bad values', () => {
    expect(() => deviceWaitStrategy(device, { peer: 1, spin: 0 } as never)).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringMatching(/unknown option 'spin'.*channel option/) }),
    );
    expect(() => deviceWaitStrategy(device, { peer: -1 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
    expect(() => deviceWaitStrategy(device, { peer: 1, recheck: Number.NaN })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
    expect(deviceWaitStrategy(device, { peer: 1, vector: 2, recheck: 0 }).wakes).toBe(true);
  });

  it('pollingWaitStrategy refuses unknown options', () => {
    expect(() => pollingWaitStrategy({ delay: 3 } as never)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
  });
});
