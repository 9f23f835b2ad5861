// C and Node ends of the same rings and the same bus region, each in its own process over a
// /dev/shm file: data both ways with wrap-around and backpressure in small rings, EOF, the
// region formatted by either side, and heartbeat loss seen from both.
import { rmSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { attach, ChannelReader, ChannelWriter, formatRing, openFile, ringSize, type Bus, type FileDevice } from '../../src/index.js';
import { child, exitCode, message, shmPath } from '../helpers.js';
import { buildC, checkPattern, CProcess, pattern, patternType } from './c-lib.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

beforeAll(() => buildC('all'), 120_000);

function shm(tag: string, size: number): { path: string; device: FileDevice } {
  const path = shmPath(`c-${tag}`);
  const device = openFile(path, { size, create: true });
  cleanup.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return { path, device };
}

function peer(args: string[]): CProcess {
  const p = new CProcess(args);
  cleanup.push(() => p.kill());
  return p;
}

/** Reads the pattern to EOF with a Node reader; returns how many messages arrived. */
async function readPattern(reader: ChannelReader, max: number): Promise<number> {
  let n = 0;
  for (;;) {
    let got: Uint8Array;
    try {
      got = await reader.receive();
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_IVSHMEM_CHANNEL_CLOSED' && reader.done) return n;
      throw error;
    }
    if (!checkPattern(n, max, got)) throw new Error(`message ${n} (${got.length} bytes) is not the pattern`);
    n++;
  }
}

const OFFSET = 4096;

describe('a ring between a C and a Node process', () => {
  // A 256-byte ring and messages up to 200 bytes: nearly every message waits for space, wraps,
  // or needs padding. Positions start just below 2^32 so the low words wrap too.
  const capacity = 256;
  const position = 2 ** 32 - 1024;
  const count = 20_000;
  const max = 200;

  it('C producer → Node consumer: every message in order, then EOF', async () => {
    const { path, device } = shm('c2n', OFFSET + ringSize(capacity));
    formatRing(device.memory, { offset: OFFSET, capacity, position });
    const reader = new ChannelReader(device.memory, { offset: OFFSET });
    const c = peer(['ring-produce', path, String(OFFSET), String(count), String(max)]);
    expect(await readPattern(reader, max)).toBe(count);
    const sent = await c.next('sent');
    expect(sent.count).toBe(count);
    expect(await c.exited).toBe(0);
  }, 60_000);

  it('Node producer → C consumer: every message in order with its type, then EOF', async () => {
    const { path, device } = shm('n2c', OFFSET + ringSize(capacity));
    formatRing(device.memory, { offset: OFFSET, capacity, position });
    const c = peer(['ring-consume', path, String(OFFSET)]);
    await c.next('ready');
    const writer = new ChannelWriter(device.memory, { offset: OFFSET });
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const msg = pattern(i, max);
      await writer.send(msg, { type: patternType(i) });
      bytes += msg.length;
    }
    writer.close();
    expect(await c.next('received')).toMatchObject({ count, bytes, end: 'eof' });
    expect(await c.exited).toBe(0);
  }, 60_000);

  it('a C consumer fails the channel with the field a hostile Node-side write broke', async () => {
    const { path, device } = shm('hostile', OFFSET + ringSize(capacity));
    formatRing(device.memory, { offset: OFFSET, capacity });
    const c = peer(['ring-consume', path, String(OFFSET)]);
    await c.next('ready');
    const writer = new ChannelWriter(device.memory, { offset: OFFSET });
    await writer.send(pattern(0, max), { type: patternType(0) });
    // A record claiming more bytes than the ring holds, published by a scribbled tail.
    const u32 = new Uint32Array(device.memory, OFFSET, ringSize(capacity) / 4);
    const at = 160 + (recordSizeOf(pattern(0, max).length) >>> 2);
    u32[at] = capacity; // length
    u32[at + 1] = 0;
    Atomics.store(u32, 32, Atomics.load(u32, 32) + 16);
    expect(await c.next('received')).toMatchObject({ count: 1, end: 'channel corrupt', field: 'length' });
    expect(await c.exited).toBe(1);
  }, 30_000);
});

function recordSizeOf(length: number): number {
  return 8 + Math.ceil(length / 8) * 8;
}

describe('a bus with C and Node peers', () => {
  const count = 3000;
  const max = 300;
  // Heartbeats of a second where liveness is not what is tested: a loaded machine can starve a
  // process for a good part of a second.

  async function exchange(bus: Bus, c: CProcess, capacity: number): Promise<void> {
    const cpeer = await bus.waitForPeer('cpeer', { signal: AbortSignal.timeout(20_000) });
    expect(cpeer.deviceId).toBeNull(); // a file: no doorbells, both ends poll
    const inbox = await bus.accept('to-node', { from: cpeer, signal: AbortSignal.timeout(20_000) });
    const out = bus.open(cpeer, 'to-c', { capacity });
    const sending = (async () => {
      for (let i = 0; i < count; i++) await out.send(pattern(i, max), { type: patternType(i) });
      out.close();
    })();
    expect(await readPattern(inbox, max)).toBe(count);
    await sending;
    expect(await c.next('received', { channel: 'to-c' })).toMatchObject({ count, end: 'eof' });
    expect(await c.next('sent', { channel: 'to-node' })).toMatchObject({ count });
    expect(await c.exited).toBe(0);
  }

  it('Node formats the region and C joins: channels both ways through small rings', async () => {
    const { path, device } = shm('bus-n', 1 << 20);
    const bus = await attach(device, { name: 'node', heartbeat: 1000, maxPeers: 4 });
    cleanup.push(() => bus.close());
    const c = peer(['bus', `file:${path}`, 'cpeer', '1000', 'send', 'node', 'to-node', String(count), String(max), '512', 'recv', 'node', 'to-c']);
    await exchange(bus, c, 512);
    expect(bus.geometry.maxPeers).toBe(4);
  }, 60_000);

  it('C formats the region and Node joins: channels both ways, then C leaves and Node sees it', async () => {
    const { path, device } = shm('bus-c', 1 << 20);
    const c = peer(['bus', `file:${path}`, 'cpeer', '1000', 'send', 'node', 'to-node', String(count), String(max), '512', 'recv', 'node', 'to-c']);
    expect(await c.next('ready')).toMatchObject({ slot: 0 });
    const bus = await attach(device, { name: 'node', heartbeat: 1000 });
    cleanup.push(() => bus.close());
    const down = new Promise((resolve) => bus.on('peer-down', (p, reason) => resolve([p.name, reason])));
    await exchange(bus, c, 512);
    expect(bus.geometry.maxPeers).toBe(16); // the C side's default
    expect(await down).toEqual(['cpeer', 'left']);
  }, 60_000);

  it('Node reuses its only directory entry once a C reader has read the channel to EOF (SPEC 2.8 1.1)', async () => {
    const { path, device } = shm('reuse', 1 << 20);
    // One entry per peer: the second channel can only be opened in the first one's entry.
    const bus = await attach(device, { name: 'node', heartbeat: 1000, maxPeers: 4, entries: 1 });
    cleanup.push(() => bus.close());
    const c = peer(['bus', `file:${path}`, 'cpeer', '1000', 'recv', 'node', 'first', 'recv', 'node', 'second']);
    const cpeer = await bus.waitForPeer('cpeer', { signal: AbortSignal.timeout(20_000) });
    for (const channel of ['first', 'second']) {
      const out = bus.open(cpeer, channel, { capacity: 512 });
      for (let i = 0; i < 100; i++) await out.send(pattern(i, max), { type: patternType(i) });
      out.close();
      // The C reader stays on the bus and never closes its end: only its store at EOF frees the entry.
      expect(await c.next('received', { channel })).toMatchObject({ count: 100, end: 'eof' });
    }
    expect(await c.exited).toBe(0);
  }, 60_000);

  it('Node sees a stopped C peer go down by heartbeat and frees its slot', async () => {
    const { path, device } = shm('hb-c', 1 << 20);
    const bus = await attach(device, { name: 'node', heartbeat: 50 });
    cleanup.push(() => bus.close());
    const c = peer(['bus', `file:${path}`, 'cpeer', '50', 'wait-peer', 'node', 'linger', '60000']);
    const cpeer = await bus.waitForPeer('cpeer', { signal: AbortSignal.timeout(20_000) });
    const down = new Promise((resolve) => bus.on('peer-down', (p, reason) => resolve([p.name, reason])));
    c.kill('SIGSTOP');
    expect(await down).toEqual(['cpeer', 'heartbeat']);
    const slot = new Uint32Array(device.memory, bus.geometry.tableOffset + cpeer.slot * 256, 1);
    expect(Atomics.load(slot, 0)).toBe(0);
    // Woken again, the C peer finds its slot taken from it and stops.
    c.kill('SIGCONT');
    expect(await c.next('error', { what: 'linger' })).toMatchObject({ status: 'evicted from the bus' });
    expect(await c.exited).toBe(1);
  }, 60_000);

  it('C sees a stopped Node peer go down by heartbeat', async () => {
    const { path } = shm('hb-n', 1 << 20);
    const node = child('bus-peer.mjs', ['file', path, 'nodepeer', '50']);
    cleanup.push(() => node.kill('SIGKILL'));
    await message(node);
    const c = peer(['bus', `file:${path}`, 'cpeer', '50', 'wait-down', 'nodepeer']);
    await c.next('peer-up', { name: 'nodepeer' });
    node.kill('SIGSTOP');
    expect(await c.next('peer-down')).toMatchObject({ name: 'nodepeer', reason: 'heartbeat' });
    expect(await c.exited).toBe(0);
    node.kill('SIGKILL');
    await exitCode(node);
  }, 60_000);
});
