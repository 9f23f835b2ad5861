// attach() on part of the shared memory (issue 10 friction): a bus that shares a BAR with other
// data, and a clear error for leftovers that are not a bus.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { attach, openFile, utf8Codec, type Device } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function shared(size: number): { path: string; open(): Device } {
  const path = shmPath('bus-place');
  openFile(path, { size, create: true }).close();
  cleanup.push(() => rmSync(path, { force: true }));
  return {
    path,
    open() {
      const dev = openFile(path);
      cleanup.push(() => dev.close());
      return dev;
    },
  };
}

describe('attach() on part of the shared memory', () => {
  it('runs a bus in [offset, offset + size) and leaves the bytes around it alone', async () => {
    const OFFSET = 64 * 1024;
    const SIZE = 1 << 20;
    const memory = shared(OFFSET + SIZE + 4096);
    const a = memory.open();
    const b = memory.open();
    const bytes = new Uint8Array(a.memory);
    // Somebody else's data before and after the bus.
    bytes.fill(0xa5, 0, OFFSET);
    bytes.fill(0x5a, OFFSET + SIZE);
    const alice = await attach(a, { name: 'alice', offset: OFFSET, size: SIZE, heartbeat: 100 });
    cleanup.push(() => alice.close());
    const bob = await attach(b, { name: 'bob', offset: OFFSET, size: SIZE, heartbeat: 100 });
    cleanup.push(() => bob.close());
    expect(alice.geometry.base).toBe(OFFSET);
    expect(alice.geometry.regionSize).toBe(SIZE);
    const out = alice.open(await alice.waitForPeer('bob'), 'chat', { codec: utf8Codec });
    const incoming = await bob.accept('chat', { codec: utf8Codec });
    await out.send('hello from inside the BAR');
    expect(await incoming.receive()).toBe('hello from inside the BAR');
    expect(bytes.subarray(0, OFFSET).every((v) => v === 0xa5)).toBe(true);
    expect(bytes.subarray(OFFSET + SIZE).every((v) => v === 0x5a)).toBe(true);
  });

  it('refuses an offset that is not a page multiple or a size past the end', async () => {
    const memory = shared(1 << 20);
    const dev = memory.open();
    await expect(attach(dev, { name: 'x', offset: 100 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringMatching(/multiple of 4096/) });
    await expect(attach(dev, { name: 'x', offset: 4096, size: 1 << 20 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' });
  });

  it('says what is wrong when leftovers sit where the bus would go (not "a peer died")', async () => {
    const memory = shared(1 << 20);
    const dev = memory.open();
    // Leftovers: magic 0, a non-zero formatting-state word (bytes 4..7 of the superblock).
    new Uint32Array(dev.memory)[1] = 0xdeadbeef;
    await expect(attach(dev, { name: 'x', formatTimeout: 20 })).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_REGION',
      message: expect.stringMatching(/state word holds 0xdeadbeef.*leftovers of something else.*offset past/),
    });
  });
});
