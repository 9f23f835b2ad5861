// Regions near and beyond 4 GiB. Sizes come from sparse files under /dev/shm: only the pages
// touched cost memory. Each risky step runs in a child so a native abort fails the test instead
// of the runner.
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer, maxMappingSize, openFile } from '../../src/index.js';
import { native } from '../../src/native.js';
import { child, openFdCount, shmPath } from '../helpers.js';

const GiB = 2 ** 30;
const cleanup: string[] = [];
afterEach(() => {
  for (const path of cleanup.splice(0)) rmSync(path, { force: true });
});

interface Outcome {
  reply: { ok: boolean; value?: unknown; name?: string; code?: string; message?: string } | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

async function outcome(proc: ChildProcess): Promise<Outcome> {
  let reply: Outcome['reply'];
  proc.on('message', (msg) => (reply = msg as Outcome['reply']));
  const [code, signal] = (await once(proc, 'exit')) as [number | null, NodeJS.Signals | null];
  return { reply, code, signal };
}

function sparseFile(tag: string, size: number): string {
  const path = shmPath(tag);
  cleanup.push(path);
  writeFileSync(path, '', { mode: 0o600 });
  truncateSync(path, size);
  return path;
}

describe('regions beyond what one ArrayBuffer can hold', () => {
  it('the addon refuses a length beyond the limit with an error, without corrupting the heap', async () => {
    const size = maxMappingSize + native.pageSize;
    const path = sparseFile('raw', size);
    const result = await outcome(child('large-peer.mjs', ['raw-map', path, String(size)]));
    expect(result.signal).toBeNull();
    expect(result.code).toBe(0);
    expect(result.reply).toMatchObject({ ok: false, name: 'RangeError' });
  });

  it('openFile() of 4 GiB + 4 KiB either maps it or says up front that it cannot', async () => {
    const size = 2 ** 32 + 4096;
    const path = shmPath('open');
    cleanup.push(path);
    const result = await outcome(child('large-peer.mjs', ['open', path, String(size)]));
    expect(result.signal).toBeNull();
    expect(result.code).toBe(0);
    if (size <= maxMappingSize) {
      expect(result.reply).toEqual({ ok: true, value: size });
    } else {
      expect(result.reply).toMatchObject({ ok: false, code: 'ERR_IVSHMEM_SIZE' });
      expect(result.reply!.message).toContain(String(maxMappingSize));
      // Refused before the file was made: nothing was created or grown.
      expect(existsSync(path)).toBe(false);
    }
  });

  it('an existing file larger than the limit is refused with ERR_IVSHMEM_SIZE, not mapped', () => {
    const path = sparseFile('existing', maxMappingSize + native.pageSize);
    expect(() => openFile(path)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_SIZE', path }));
  });
});

describe('a server handing out more memory than can be mapped', () => {
  it('connect() rejects with ERR_IVSHMEM_SIZE before mapping and keeps no fd', async () => {
    const socket = shmPath('sock');
    cleanup.push(socket);
    const before = openFdCount();
    // 8 GiB, as with `ivshmem server -l 8G`: a memfd, so it costs nothing until touched.
    const server = await IvshmemServer.listen({ socket, size: 8 * GiB });
    try {
      await expect(connect(socket)).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SIZE', path: socket });
    } finally {
      await server.close();
    }
    expect(openFdCount()).toBe(before);
  });
});

describe('the largest region the library maps', () => {
  it('works from two processes, at offsets up to its last bytes', async () => {
    const size = Math.min(maxMappingSize, 5 * GiB);
    expect(size).toBeGreaterThanOrEqual(4 * GiB);
    const path = shmPath('largest');
    cleanup.push(path);
    const dev = openFile(path, { size, create: true });
    try {
      const offsets = [0, 2 ** 31 + 64, 2 ** 32 - 4096, size - 16];
      if (size > 2 ** 32 + 4096) offsets.push(2 ** 32 + 4096);
      offsets.forEach((o, i) => new DataView(dev.memory, o, 16).setUint32(0, 0xa5000000 + i, true));
      const result = await outcome(child('large-peer.mjs', ['echo', path, '0', ...offsets.map(String)]));
      expect(result.code).toBe(0);
      expect(result.reply).toEqual({ ok: true, value: { length: size, seen: offsets.map((_, i) => 0xa5000000 + i) } });
      for (const [i, o] of offsets.entries()) {
        expect(new DataView(dev.memory, o, 16).getUint32(8, true)).toBe(~(0xa5000000 + i) >>> 0);
      }
    } finally {
      dev.close();
    }
  });
});
