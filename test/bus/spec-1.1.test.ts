// Version 1.1 rules of the region (SPEC 2.8 with 3.7, 3.3, 3.5), on real files shared by two
// devices, with the second peer's slot written by hand where a hostile or dead peer is needed.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { attach, openFile, type Bus, type Device } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function tempFile(size = 1 << 20): string {
  const path = shmPath('bus11');
  openFile(path, { size, create: true }).close();
  cleanup.push(() => rmSync(path, { force: true }));
  return path;
}

function file(path: string): Device {
  const dev = openFile(path);
  cleanup.push(() => dev.close());
  return dev;
}

async function join(device: Device, options: Parameters<typeof attach>[1]): Promise<Bus> {
  const bus = await attach(device, options);
  cleanup.push(() => bus.close());
  return bus;
}

describe('SPEC 3.7: channels closed by the writer and read to the end are reclaimed', () => {
  it('opens more channels than the directory has entries when each is closed and read to EOF, without reader.close()', async () => {
    const path = tempFile();
    const a = await join(file(path), { name: 'a', heartbeat: 100, entries: 4 });
    const b = await join(file(path), { name: 'b', heartbeat: 100 });
    const peer = await a.waitForPeer('b');
    for (let i = 0; i < 12; i++) {
      const writer = a.open(peer, `c${i}`);
      await writer.send(new Uint8Array([i]));
      writer.close();
      const reader = await b.accept(`c${i}`);
      expect(Array.from(await reader.receive())).toEqual([i]);
      await expect(reader.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    }
  });
});
