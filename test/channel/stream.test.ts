// Node streams over channels: a large transfer piped through another process and back, every
// byte checked; backpressure; a failed writer is never taken for a clean end.
import { rmSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { openFile } from '../../src/device/file.js';
import { ChannelReader, ChannelWriter, channelDuplex, channelReadable, channelWritable, createChannel, formatRing, ringSize } from '../../src/channel/index.js';
import { child, exitCode, message, shmPath } from '../helpers.js';

// The byte at stream position `i`: depends on the position, so a lost, doubled or reordered
// byte shows.
const byteAt = (i: number): number => (i ^ (i >>> 8) ^ Math.imul(i >>> 16, 31)) & 0xff;

function* chunks(total: number): Generator<Buffer> {
  let position = 0;
  let seed = 1;
  while (position < total) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const chunk = Buffer.allocUnsafe(Math.min(1 + (seed % 200_000), total - position));
    for (let j = 0; j < chunk.length; j++) chunk[j] = byteAt(position + j);
    position += chunk.length;
    yield chunk;
  }
}

function checker(): { sink: Writable; result: { bytes: number; firstBad: number } } {
  const result = { bytes: 0, firstBad: -1 };
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (let j = 0; j < chunk.length; j++) {
        if (result.firstBad < 0 && chunk[j] !== byteAt(result.bytes + j)) result.firstBad = result.bytes + j;
      }
      result.bytes += chunk.length;
      done();
    },
  });
  return { sink, result };
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

describe('channel streams', () => {
  it('pipes 48 MiB through another process and back over a /dev/shm file, every byte checked, ending cleanly', async () => {
    const total = 48 << 20;
    const ring = ringSize(1 << 16);
    const path = shmPath('stream');
    const dev = openFile(path, { size: 2 * ring, create: true });
    cleanup.push(() => {
      dev.close();
      rmSync(path, { force: true });
    });
    formatRing(dev.memory, { offset: 0, size: ring });
    formatRing(dev.memory, { offset: ring, size: ring });
    const echo = child('stream-peer.mjs', [path, '0', String(ring), String(ring)]);
    cleanup.push(() => echo.kill());
    const duplex = channelDuplex({
      writer: new ChannelWriter(dev.memory, { offset: 0, size: ring }),
      reader: new ChannelReader(dev.memory, { offset: ring, size: ring }),
    });
    const { sink, result } = checker();
    await pipeline(Readable.from(chunks(total)), duplex, sink);
    expect(result).toEqual({ bytes: total, firstBad: -1 });
    expect(await message(echo)).toEqual({ bytes: total });
    expect(await exitCode(echo)).toBe(0);
  }, 300_000);

  it('holds back a writer whose reader does not read: write() returns false once the ring and the buffer are full', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    const out = channelWritable(writer, { highWaterMark: 1024 });
    let written = 0;
    while (out.write(Buffer.alloc(512, 7))) {
      written += 512;
      expect(written).toBeLessThanOrEqual(writer.capacity + 1024 + 512);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(written).toBeGreaterThanOrEqual(writer.capacity - 1024);
    // A reader that starts later gets it all and the writer drains.
    const input = channelReadable(reader);
    const drained = new Promise((resolve) => out.once('drain', resolve));
    const received: Buffer[] = [];
    input.on('data', (chunk: Buffer) => received.push(chunk));
    await drained;
    out.end();
    await new Promise((resolve) => input.once('end', resolve));
    expect(Buffer.concat(received)).toEqual(Buffer.alloc(written + 512, 7));
  });

  it('a writable destroyed with an error fails the readable instead of ending it, after the data before it', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    const out = channelWritable(writer);
    out.write(Buffer.from('partial'));
    out.on('error', () => {}); // the error is the test's own
    out.destroy(new Error('disk gone'));
    const received: Buffer[] = [];
    await expect(pipeline(channelReadable(reader), new Writable({ write: (c: Buffer, _e, done) => (received.push(c), done()) }))).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_CHANNEL_ABORTED',
    });
    expect(Buffer.concat(received).toString()).toBe('partial');
  });

  // The usual state when a transfer is cut under backpressure: no room for any record.
  it('a writable destroyed with an error on a full ring still fails the readable', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    const out = channelWritable(writer);
    out.on('error', () => {});
    while (writer.trySend(Buffer.alloc(64, 1))) {
      /* fill the ring */
    }
    out.destroy(new Error('cut'));
    await expect(pipeline(channelReadable(reader), new Writable({ write: (_c, _e, done) => done() }))).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_CHANNEL_ABORTED',
    });
  });

  it('a writable destroyed with a reason longer than a message still fails the readable', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    const out = channelWritable(writer);
    out.on('error', () => {});
    out.destroy(new Error('x'.repeat(10 * writer.maxMessageSize)));
    await expect(pipeline(channelReadable(reader), new Writable({ write: (_c, _e, done) => done() }))).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_CHANNEL_ABORTED',
    });
  });

  it('a record of a type the stream does not carry fails the readable, naming the type', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    writer.trySend(Buffer.from('ok'));
    writer.trySend(Buffer.from('?'), 7);
    writer.close();
    await expect(pipeline(channelReadable(reader), new Writable({ write: (_c, _e, done) => done() }))).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_CHANNEL_CORRUPT',
      message: expect.stringContaining('type 7'),
    });
  });

  it('a reader of a ring closed with an error receives what was sent, then fails typed (receive, receiveSync, iteration)', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    writer.trySend(Buffer.from('a'));
    writer.close({ error: true });
    expect(Buffer.from(await reader.receive()).toString()).toBe('a');
    await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' });
    expect(() => reader.receiveSync({ timeout: 1000 })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' }));
    await expect(reader.ready()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' });
    await expect((async () => { for await (const _ of reader); })()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_ABORTED' });
  });

  it('cuts chunks larger than a message into several', async () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    const big = Buffer.from(Array.from({ length: 3 * writer.maxMessageSize + 5 }, (_, i) => byteAt(i)));
    const { sink, result } = checker();
    await Promise.all([pipeline(Readable.from([big]), channelWritable(writer)), pipeline(channelReadable(reader), sink)]);
    expect(result).toEqual({ bytes: big.length, firstBad: -1 });
  });
});
