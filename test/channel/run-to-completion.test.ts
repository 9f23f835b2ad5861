// The blocking (run-to-completion) path across real processes: over a /dev/shm file (no
// doorbell: spin, then naps) and over our server (real eventfds: spin, announce, sleep in
// ppoll). This thread blocks in receiveSync/sendSync too, so children report over IPC only
// before the parent blocks or after it returns.
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { ChannelError, ChannelReader, ChannelWriter, deviceWaitStrategy, formatRing, ringSize, type WaitStrategy } from '../../src/channel/index.js';
import { connect, type ServerPeerDevice } from '../../src/device/server-peer.js';
import { openFile } from '../../src/device/file.js';
import { IvshmemServer } from '../../src/server/server.js';
import { child, exitCode, message, shmPath } from '../helpers.js';

const CAPACITY = 1024;
const SIZE = ringSize(CAPACITY);
const cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

interface Side {
  memory: ArrayBuffer;
  /** Forks rtc-peer.mjs on the same memory; resolves once it is ready. */
  spawn(args: string[]): Promise<{ proc: ChildProcess; wait?: WaitStrategy }>;
}

// Both rings formatted; the child told where the memory is and, over a server, its doorbell.
function side(memory: ArrayBuffer, transport: string, where: string, device?: ServerPeerDevice): Side {
  formatRing(memory, { offset: 0, size: SIZE });
  formatRing(memory, { offset: SIZE, size: SIZE });
  return {
    memory,
    async spawn([mode, ...rest]) {
      const proc = child('rtc-peer.mjs', [mode!, transport, where, String(SIZE), ...rest]);
      cleanup.push(() => void proc.kill('SIGKILL'));
      const { id } = await message<{ id: number }>(proc);
      // recheck 0: a lost wake-up would hang until the timeout, and fail the test.
      return { proc, wait: device && deviceWaitStrategy(device, { peer: id, vector: 0, recheck: 0 }) };
    },
  };
}

async function fileSide(): Promise<Side> {
  const path = shmPath('rtc');
  const device = openFile(path, { size: 2 * SIZE, create: true });
  cleanup.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return side(device.memory, 'file', path);
}

async function serverSide(): Promise<Side> {
  const socket = join(tmpdir(), `ivshmem-rtc-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  const server = await IvshmemServer.listen({ socket, size: 1 << 16, vectors: 1 });
  const device = await connect(socket, { vectors: 1 });
  cleanup.push(async () => {
    device.close();
    await server.close();
  });
  return side(device.memory, 'server', socket, device);
}

function fnv(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

// 600 records through an echoing peer, in bursts larger than the ring: both ends block on a
// full ring as well as on an empty one.
function echo600(writer: ChannelWriter, reader: ChannelReader): void {
  let expected = 0;
  for (let sent = 0; sent < 600; ) {
    for (let i = 0; i < 40; i++, sent++) {
      const msg = new Uint8Array(100);
      new DataView(msg.buffer).setUint32(0, sent, true);
      writer.sendSync(msg, { timeout: 20_000 });
      while (reader.available > 0) expect(new DataView(reader.receiveSync({ timeout: 20_000 }).buffer).getUint32(0, true)).toBe(expected++);
    }
    while (expected < sent) expect(new DataView(reader.receiveSync({ timeout: 20_000 }).buffer).getUint32(0, true)).toBe(expected++);
  }
}

function codeOf(call: () => unknown): string | undefined {
  try {
    call();
  } catch (error) {
    return (error as ChannelError).code;
  }
  return undefined;
}

describe.each([
  ['a /dev/shm file (no doorbell)', fileSide],
  ['our server (eventfd doorbells)', serverSide],
])('run-to-completion over %s', (_name, makeSide) => {
  it('echoes records in order through a blocking peer, then EOF both ways', async () => {
    const side = await makeSide();
    const { proc, wait } = await side.spawn(['echo', '0']);
    const writer = new ChannelWriter(side.memory, { offset: 0, size: SIZE, wait, spin: 0 });
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    echo600(writer, reader);
    const report = message<{ echoed: number }>(proc);
    writer.close();
    expect(codeOf(() => reader.receiveSync({ timeout: 20_000 }))).toBe('ERR_IVSHMEM_CHANNEL_CLOSED');
    expect(reader.readySync()).toBe(false);
    expect(await report).toEqual({ echoed: 600 });
    expect(await exitCode(proc)).toBe(0);
  }, 60_000);

  it('loses no wake-up over many alternating round trips that all sleep (spin 0)', async () => {
    const side = await makeSide();
    const { proc, wait } = await side.spawn(['echo', '0']);
    const writer = new ChannelWriter(side.memory, { offset: 0, size: SIZE, wait, spin: 0 });
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    const msg = new Uint8Array(8);
    const view = new DataView(msg.buffer);
    for (let i = 0; i < 3000; i++) {
      view.setUint32(0, i, true);
      writer.sendSync(msg);
      // A lost wake-up (there is no re-check on the server side) ends in this timeout.
      const back = reader.receiveSync({ timeout: 20_000, spin: 0 });
      if (new DataView(back.buffer).getUint32(0, true) !== i) expect.fail(`round trip ${i} came back as ${new DataView(back.buffer).getUint32(0, true)}`);
    }
    const report = message(proc);
    writer.close();
    expect(await report).toEqual({ echoed: 3000 });
  }, 120_000);

  it('times out with a typed error when nothing comes, and keeps working after it', async () => {
    const side = await makeSide();
    const { proc, wait } = await side.spawn(['echo', '20']);
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait });
    expect(codeOf(() => reader.receiveSync({ timeout: 30, spin: 5 }))).toBe('ERR_IVSHMEM_TIMEOUT');
    expect(codeOf(() => reader.readySync({ timeout: 0 }))).toBe('ERR_IVSHMEM_TIMEOUT');
    expect(reader.failure).toBeNull();
    const writer = new ChannelWriter(side.memory, { offset: 0, size: SIZE, wait });
    writer.sendSync(Uint8Array.of(1, 2, 3));
    expect([...reader.receiveSync({ timeout: 20_000 })]).toEqual([1, 2, 3]);
    writer.close();
    await exitCode(proc);
  }, 60_000);

  it('a writer killed (SIGKILL) mid-stream: every record up to it intact and in order, then a timeout', async () => {
    const side = await makeSide();
    const { proc, wait } = await side.spawn(['stream', '1000000000']);
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    let seq = 0;
    const check = (msg: Uint8Array): void => {
      const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
      if (v.getUint32(0, true) !== seq) expect.fail(`record ${seq}: got sequence ${v.getUint32(0, true)}`);
      if (msg.byteLength !== 8 + (seq % 200) || v.getUint32(4, true) !== fnv(msg, 8, msg.length)) expect.fail(`record ${seq} is torn`);
      seq++;
    };
    for (let i = 0; i < 2000; i++) check(reader.receiveSync({ timeout: 20_000 }));
    proc.kill('SIGKILL');
    let code: string | undefined;
    for (;;) {
      try {
        check(reader.receiveSync({ timeout: 300 }));
      } catch (error) {
        code = (error as ChannelError).code;
        break;
      }
    }
    expect(code).toBe('ERR_IVSHMEM_TIMEOUT');
    expect(seq).toBeGreaterThanOrEqual(2000);
    expect(reader.failure).toBeNull();
    expect(await exitCode(proc)).toBe(null);
  }, 60_000);

  it('a hostile tail while blocked is a typed CORRUPT error, and the channel stays failed', async () => {
    const side = await makeSide();
    // u32 word 32 is the tail: 12 is not a multiple of 8.
    const { proc, wait } = await side.spawn(['scribble', '32', '12']);
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    const report = message(proc);
    await new Promise<void>((resolve) => proc.send('go', () => resolve()));
    let error: ChannelError | undefined;
    try {
      reader.receiveSync({ timeout: 20_000 });
    } catch (e) {
      error = e as ChannelError;
    }
    expect(error).toBeInstanceOf(ChannelError);
    expect(error!.code).toBe('ERR_IVSHMEM_CHANNEL_CORRUPT');
    expect(error!.field).toBe('tail');
    expect(reader.failure).toBe(error);
    expect(codeOf(() => reader.receiveSync({ timeout: 0 }))).toBe('ERR_IVSHMEM_CHANNEL_CORRUPT');
    expect(await report).toEqual({ scribbled: true });
  }, 60_000);

  it('takes a timeout and a spin of any size (nanoseconds past 2^53 are clamped, not the addon\'s TypeError)', async () => {
    const side = await makeSide();
    const { proc, wait } = await side.spawn(['scribble', '32', '12']);
    const reader = new ChannelReader(side.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    const report = message(proc);
    await new Promise<void>((resolve) => proc.send('go', () => resolve()));
    // 1e10 ms and 1e13 µs are 1e16 ns: more than a double holds exactly. The peer's hostile
    // tail is what ends the wait.
    expect(codeOf(() => reader.receiveSync({ timeout: 1e10, spin: 1e13 }))).toBe('ERR_IVSHMEM_CHANNEL_CORRUPT');
    expect(await report).toEqual({ scribbled: true });
  }, 60_000);
});

describe('run-to-completion between two worker threads over a SharedArrayBuffer', () => {
  it('echoes records in order, both threads blocking on full and empty rings, then EOF both ways', async () => {
    const memory = new SharedArrayBuffer(2 * SIZE);
    formatRing(memory as unknown as ArrayBuffer, { offset: 0, size: SIZE });
    formatRing(memory as unknown as ArrayBuffer, { offset: SIZE, size: SIZE });
    const worker = new Worker(new URL('../fixtures/rtc-worker.mjs', import.meta.url), { workerData: { memory, size: SIZE } });
    cleanup.push(() => worker.terminate().then(() => {}));
    const next = (): Promise<Record<string, unknown>> => new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(await next()).toEqual({ ready: true });
    const writer = new ChannelWriter(memory as unknown as ArrayBuffer, { offset: 0, size: SIZE, spin: 0 });
    const reader = new ChannelReader(memory as unknown as ArrayBuffer, { offset: SIZE, size: SIZE, spin: 0 });
    echo600(writer, reader);
    const report = next();
    writer.close();
    expect(codeOf(() => reader.receiveSync({ timeout: 20_000 }))).toBe('ERR_IVSHMEM_CHANNEL_CLOSED');
    expect(await report).toEqual({ echoed: 600 });
  }, 60_000);
});

describe('run-to-completion arguments', () => {
  it('refuses unknown and bad options with typed errors', () => {
    const memory = new ArrayBuffer(SIZE);
    formatRing(memory);
    const reader = new ChannelReader(memory);
    const writer = new ChannelWriter(memory);
    expect(codeOf(() => reader.receiveSync({ timeot: 5 } as never))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    expect(codeOf(() => reader.receiveSync({ timeout: -1 }))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    expect(codeOf(() => reader.receiveSync({ spin: Infinity }))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    expect(codeOf(() => writer.sendSync(new Uint8Array(1), { timeout: Number.NaN }))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    // A strategy of one's own: its re-check period is checked like deviceWaitStrategy's.
    const own = (recheck: number): WaitStrategy => ({ wakes: true, notify() {}, wait: () => Promise.resolve(), blocking: { fd: () => -1, recheck } });
    for (const recheck of [-1, Number.NaN, 2 ** 31]) {
      expect(codeOf(() => new ChannelReader(memory, { wait: own(recheck) }).readySync({ timeout: 0, spin: 0 })), String(recheck)).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    }
  });

  it('a blocking end rings a doorbell the limit deferred itself (its timer cannot run while it blocks)', () => {
    const memory = new ArrayBuffer(ringSize(8192));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { spin: 0 }); // polls: never rings
    for (let i = 0; i < 400; i++) writer.trySend(new Uint8Array(8));
    let rung = 0;
    const wait: WaitStrategy = { wakes: true, notify: () => rung++, wait: () => Promise.resolve(), blocking: { fd: () => -1, recheck: 0 } };
    const reader = new ChannelReader(memory, { wait, spin: 0 });
    const producerWait = new Uint32Array(memory, 0, 160);
    // A writer that announces a new sleep before every message taken: each release rings it,
    // until the limit's burst is spent and a doorbell is deferred to a timer.
    let deferredFor = 0;
    for (let i = 0; i < 400 && deferredFor === 0; i++) {
      producerWait[64] = 2 * i + 1;
      const before = rung;
      reader.tryReceive();
      if (rung === before) deferredFor = producerWait[64]!;
    }
    expect(deferredFor).not.toBe(0);
    producerWait[64] = 0; // awake while we take the rest: nothing to ring
    reader.drain(() => {});
    producerWait[64] = deferredFor; // asleep again, still waiting for that doorbell
    const rungBefore = rung;
    // Empty ring: readySync blocks in this thread, where no timer runs, and rings it itself.
    expect(codeOf(() => reader.readySync({ timeout: 20, spin: 0 }))).toBe('ERR_IVSHMEM_TIMEOUT');
    expect(rung).toBe(rungBefore + 1);
  });

  it('sendSync refuses to overtake asynchronous sends that wait for space', async () => {
    const memory = new ArrayBuffer(ringSize(64));
    formatRing(memory);
    const writer = new ChannelWriter(memory, { spin: 0 });
    while (writer.trySend(new Uint8Array(8)));
    const pending = writer.send(new Uint8Array(8));
    expect(codeOf(() => writer.sendSync(new Uint8Array(8), { timeout: 0 }))).toBe('ERR_IVSHMEM_CHANNEL_BUSY');
    writer.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
  });

  it('a blocking wait that drains the doorbell passes it on to an asynchronous end parked on the same vector', async () => {
    const socket = join(tmpdir(), `ivshmem-rtc-shared-vector-${process.pid}.sock`);
    const server = await IvshmemServer.listen({ socket, size: 1 << 16, vectors: 1 });
    cleanup.push(() => server.close());
    const device = await connect(socket, { vectors: 1 });
    const other = await connect(socket, { vectors: 1 }); // stands in for the peer process
    cleanup.push(() => {
      device.close();
      other.close();
    });
    formatRing(device.memory, { offset: 0, size: SIZE });
    formatRing(device.memory, { offset: SIZE, size: SIZE });
    // recheck 0: a doorbell taken from the parked send is never made up for by a re-check.
    const wait = deviceWaitStrategy(device, { peer: other.id, vector: 0, recheck: 0 });
    const writer = new ChannelWriter(device.memory, { offset: 0, size: SIZE, wait, spin: 0 });
    const reader = new ChannelReader(device.memory, { offset: SIZE, size: SIZE, wait, spin: 0 });
    while (writer.trySend(new Uint8Array(100)));
    const pending = writer.send(new Uint8Array(100)); // parks, waiting for space
    await new Promise((resolve) => setImmediate(resolve));
    // The other peer takes every record and rings this device on vector 0 for the parked send.
    new ChannelReader(other.memory, { offset: 0, size: SIZE, spin: 0 }).drain(() => {});
    other.ring(device.id, 0);
    // Meanwhile this thread blocks on the other channel, same device and vector: it sleeps on
    // the eventfd, finds it readable and drains it, and finds nothing on its own ring.
    expect(codeOf(() => reader.readySync({ timeout: 50, spin: 0 }))).toBe('ERR_IVSHMEM_TIMEOUT');
    let timer: NodeJS.Timeout | undefined;
    const lost = new Promise((resolve) => (timer = setTimeout(resolve, 10_000, 'lost')));
    expect(await Promise.race([pending.then(() => 'sent'), lost])).toBe('sent');
    clearTimeout(timer);
  });

  it('a device closed under a blocking reader is ERR_IVSHMEM_CLOSED, not a wait on a stale fd', async () => {
    const socket = join(tmpdir(), `ivshmem-rtc-closed-${process.pid}.sock`);
    const server = await IvshmemServer.listen({ socket, size: 1 << 16, vectors: 1 });
    cleanup.push(() => server.close());
    const device = await connect(socket, { vectors: 1 });
    formatRing(device.memory, { size: SIZE });
    const reader = new ChannelReader(device.memory, { size: SIZE, wait: deviceWaitStrategy(device, { peer: 9 }) });
    expect(device.interruptFd(0)).toBeGreaterThanOrEqual(0);
    device.close();
    expect(codeOf(() => reader.receiveSync({ timeout: 10 }))).toBe('ERR_IVSHMEM_CLOSED');
    expect(codeOf(() => device.interruptFd(0))).toBe('ERR_IVSHMEM_CLOSED');
  });
});
