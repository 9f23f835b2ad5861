import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { openFile, type FileDevice } from '../../src/device/file.js';
import { ChannelError, ChannelReader, ChannelWriter, formatRing, ringSize } from '../../src/channel/index.js';
import { child, exitCode, message, shmPath } from '../helpers.js';

function fnv(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function shm(tag: string, size: number): { path: string; device: FileDevice } {
  const path = shmPath(tag);
  const device = openFile(path, { size, create: true });
  cleanup.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return { path, device };
}

const OFFSET = 4096;

describe('channels across processes over a /dev/shm file', () => {
  it('delivers 100k checksummed messages in order to another process', async () => {
    const count = 100_000;
    const { path, device } = shm('chan-fwd', OFFSET + ringSize(1 << 16));
    formatRing(device.memory, { offset: OFFSET });
    const reader = child('channel-peer.mjs', ['reader', path, String(OFFSET)]);
    const writer = new ChannelWriter(device.memory, { offset: OFFSET });
    let seed = 7;
    let bytes = 0;
    for (let seq = 0; seq < count; seq++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const msg = new Uint8Array(8 + (seed % 600));
      for (let i = 8; i < msg.length; i++) msg[i] = (seed >>> (i & 15)) + i;
      const view = new DataView(msg.buffer);
      view.setUint32(0, seq, true);
      view.setUint32(4, fnv(msg, 8, msg.length), true);
      await writer.send(msg);
      bytes = (bytes + msg.length) >>> 0;
    }
    writer.close();
    const result = await message<{ received: number; bytes: number; problem: string | null }>(reader);
    console.log(`channel cross-process: ${result.received} messages, ${result.bytes} bytes received by pid ${reader.pid}`);
    expect(result).toEqual({ received: count, bytes, problem: null });
    expect(await exitCode(reader)).toBe(0);
  }, 60_000);

  it('receives 100k checksummed messages from another process', async () => {
    const count = 100_000;
    const { path, device } = shm('chan-rev', OFFSET + ringSize(1 << 16));
    formatRing(device.memory, { offset: OFFSET });
    const reader = new ChannelReader(device.memory, { offset: OFFSET });
    const writer = child('channel-peer.mjs', ['writer', path, String(OFFSET), String(count)]);
    const report = message(writer); // listen now: the child may report before the loop ends
    let seq = 0;
    for await (const msg of reader) {
      const view = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
      if (view.getUint32(0, true) !== seq) expect.fail(`message ${seq}: got sequence ${view.getUint32(0, true)}`);
      if (view.getUint32(4, true) !== fnv(msg, 8, msg.length)) expect.fail(`message ${seq}: bad checksum`);
      seq++;
    }
    expect(seq).toBe(count);
    expect(await report).toEqual({ sent: count });
    expect(await exitCode(writer)).toBe(0);
  }, 60_000);

  it('survives a concurrent scribbler: typed errors only, nothing outside the ring touched', async () => {
    const capacity = 4096;
    const size = ringSize(capacity);
    const { path, device } = shm('chan-scribble', OFFSET + size + OFFSET);
    const all = new Uint8Array(device.memory);
    all.fill(0xa5, 0, OFFSET);
    all.fill(0xa5, OFFSET + size);
    formatRing(device.memory, { offset: OFFSET, size });
    const scribbler = child('channel-peer.mjs', ['scribble', path, String(OFFSET), String(size)]);
    await message(scribbler);
    const fields: Record<string, number> = {};
    let rounds = 0;
    let delivered = 0;
    const deadline = performance.now() + 3000;
    while (performance.now() < deadline) {
      rounds++;
      formatRing(device.memory, { offset: OFFSET, size });
      let writer: ChannelWriter, reader: ChannelReader;
      try {
        writer = new ChannelWriter(device.memory, { offset: OFFSET, size, spin: 5 });
        reader = new ChannelReader(device.memory, { offset: OFFSET, size, spin: 5, wait: undefined });
      } catch (error) {
        expect(error).toBeInstanceOf(ChannelError); // scribbled between format and attach
        fields[`attach:${(error as ChannelError).field ?? (error as ChannelError).code}`] ??= 0;
        fields[`attach:${(error as ChannelError).field ?? (error as ChannelError).code}`]!++;
        continue;
      }
      const producing = (async () => {
        for (let i = 0; ; i++) await writer.send(new Uint8Array(i % 300).fill(i & 0xff));
      })();
      const consuming = (async () => {
        // Sends and receives that never wait resolve in microtasks only, so timers cannot end
        // a round: look at the clock instead. A ring that stops moving is no failure either.
        const signal = AbortSignal.timeout(500);
        const roundEnd = performance.now() + 200;
        while (performance.now() < roundEnd) {
          const msg = await reader.receive({ signal });
          expect(msg.length).toBeLessThanOrEqual(capacity - 8);
          delivered++;
        }
      })();
      const [produced, consumed] = await Promise.allSettled([
        consuming.finally(() => writer.close()),
        producing.finally(() => reader.close()),
      ]).then((r) => r.map((s) => (s.status === 'rejected' ? (s.reason as Error) : null)));
      for (const error of [produced, consumed]) {
        if (error && !(error instanceof ChannelError) && (error as Error).name !== 'TimeoutError') throw error;
        if (error instanceof ChannelError) {
          const key = error.field ?? error.code;
          fields[key] = (fields[key] ?? 0) + 1;
        }
      }
    }
    scribbler.send('stop');
    const { writes } = await message<{ writes: number }>(scribbler);
    expect(await exitCode(scribbler)).toBe(0);
    console.log(`channel scribbler: ${rounds} rounds, ${writes} scribbled words, ${delivered} messages delivered; failures ${JSON.stringify(fields)}`);
    for (let i = 0; i < OFFSET; i++) {
      if (all[i] !== 0xa5 || all[OFFSET + size + i] !== 0xa5) expect.fail(`canary at ${i} overwritten`);
    }
    expect(Object.keys(fields).length).toBeGreaterThan(0);
  }, 60_000);
});
