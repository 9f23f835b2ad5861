// `using` / `await using` release what they hold at the end of the block: devices, the bus,
// channel ends and the server.
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attach } from '../src/bus/index.js';
import { createChannel, ringSize } from '../src/channel/index.js';
import { connect } from '../src/device/server-peer.js';
import { openFile, type FileDevice } from '../src/device/file.js';
import { IvshmemServer } from '../src/server/server.js';
import { openFdCount, shmPath } from './helpers.js';

describe('explicit resource management', () => {
  it('using releases a file device and the bus on it', async () => {
    const path = shmPath('dispose');
    const fds = openFdCount();
    let device: FileDevice;
    let leftBus: boolean;
    try {
      {
        using dev = openFile(path, { size: 1 << 20, create: true });
        device = dev;
        using bus = await attach(dev, { name: 'disposer' });
        expect(bus.closed).toBe(false);
        leftBus = false;
        bus.on('close', () => (leftBus = true));
      }
      expect(leftBus).toBe(true);
      expect(device.closed).toBe(true);
      expect(device.memory.byteLength).toBe(0);
      expect(openFdCount()).toBe(fds);
    } finally {
      rmSync(path, { force: true });
    }
  });

  it('using closes channel ends: the reader sees EOF after what the writer sent', () => {
    const { writer, reader } = createChannel(new ArrayBuffer(ringSize(4096)));
    {
      using w = writer;
      w.trySend(new Uint8Array([1, 2, 3]));
    }
    expect(writer.closed).toBe(true);
    {
      using r = reader;
      expect(r.tryReceive()).toEqual(new Uint8Array([1, 2, 3]));
      expect(r.done).toBe(true);
    }
    expect(() => reader.tryReceive()).toThrow(/after close/);
  });

  it('await using closes the server and removes its socket; using disconnects a server peer', async () => {
    const socket = join(tmpdir(), `ivshmem-dispose-${process.pid}.sock`);
    let peer: FileDevice | Awaited<ReturnType<typeof connect>>;
    {
      await using server = await IvshmemServer.listen({ socket, size: 1 << 20 });
      expect(server.peers).toEqual([]);
      {
        using p = await connect(socket);
        peer = p;
      }
      expect(peer.closed).toBe(true);
      expect(existsSync(socket)).toBe(true);
    }
    expect(existsSync(socket)).toBe(false);
  });
});
