import { existsSync, readlinkSync, rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IvshmemError, openFile } from '../../src/index.js';
import { native } from '../../src/native.js';
import { child, exitCode, fixtures, message, openFdCount, shmPath } from '../helpers.js';

const cleanup: string[] = [];
afterEach(() => {
  for (const path of cleanup.splice(0)) rmSync(path, { force: true });
});

function fdTarget(fd: number): string | null {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

describe('eventfd', () => {
  it('counts signals and drains to zero', () => {
    const fd = native.eventfdCreate();
    expect(native.eventfdDrain(fd)).toBe(0);
    native.eventfdSignal(fd);
    native.eventfdSignal(fd, 4);
    expect(native.eventfdDrain(fd)).toBe(5);
    expect(native.eventfdDrain(fd)).toBe(0);
    native.close(fd);
  });

  it('wakes a watcher on the event loop', async () => {
    const fd = native.eventfdCreate();
    const woke = new Promise<number>((resolve) => {
      const watcher = new native.Watcher(fd, (error, events) => {
        expect(error).toBeNull();
        expect(events & native.READABLE).toBeTruthy();
        watcher.close();
        resolve(native.eventfdDrain(fd));
      });
      watcher.start(native.READABLE);
    });
    setTimeout(() => native.eventfdSignal(fd, 3), 5);
    expect(await woke).toBe(3);
    native.close(fd);
  });
});

describe('UNIX sockets with fds', () => {
  it('pass an eventfd and a memfd to another process, which signals and writes through them', async () => {
    const sockPath = shmPath('sock');
    cleanup.push(sockPath);
    const listener = native.socketListen(sockPath);
    const eventfd = native.eventfdCreate();
    const memfd = native.memfdCreate('test');
    native.ftruncate(memfd, 4096);
    const memory = native.map(memfd, 0, 4096, true);

    const peer = child('core-peer.mjs', ['receive-fds', sockPath]);
    const client = await new Promise<number>((resolve) => {
      const watcher = new native.Watcher(listener, () => {
        const fd = native.socketAccept(listener);
        if (fd < 0) return;
        watcher.close();
        resolve(fd);
      });
      watcher.start(native.READABLE);
    });
    // One 8-byte message per fd, as the ivshmem-server protocol does.
    const msg = new Uint8Array(8);
    expect(native.socketSend(client, msg, eventfd)).toBe(8);
    expect(native.socketSend(client, msg, memfd)).toBe(8);

    const signalled = new Promise<number>((resolve) => {
      const watcher = new native.Watcher(eventfd, () => {
        watcher.close();
        resolve(native.eventfdDrain(eventfd));
      });
      watcher.start(native.READABLE);
    });
    const reply = await message<{ ino: number }>(peer);
    expect(await signalled).toBe(7);
    // The same object: the other process's write is in our mapping, and the inode matches.
    expect(new Uint8Array(memory)[0]).toBe(0xab);
    expect(reply.ino).toBe(native.fstat(memfd).ino);
    expect(await exitCode(peer)).toBe(0);

    native.unmap(memory);
    for (const fd of [client, listener, eventfd, memfd]) native.close(fd);
  });

  it('reports end of stream and an empty socket distinctly', () => {
    const sockPath = shmPath('eof');
    cleanup.push(sockPath);
    const listener = native.socketListen(sockPath);
    const a = native.socketConnect(sockPath);
    const b = native.socketAccept(listener);
    expect(b).toBeGreaterThanOrEqual(0);
    const buf = new Uint8Array(8);
    expect(native.socketReceive(b, buf)).toBeNull();
    native.close(a);
    expect(native.socketReceive(b, buf)).toEqual({ bytes: 0, fds: [], truncated: false });
    native.close(b);
    native.close(listener);
  });

  it('names the socket path when connecting fails', () => {
    const sockPath = shmPath('nobody');
    let error: IvshmemError | undefined;
    try {
      native.socketConnect(sockPath);
    } catch (e) {
      error = e as IvshmemError;
    }
    expect(error).toBeInstanceOf(IvshmemError);
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'connect', path: sockPath });
  });
});

describe('mappings', () => {
  it('unmap detaches every view and refuses buffers it did not map', () => {
    const fd = native.memfdCreate('unmap');
    native.ftruncate(fd, 8192);
    const memory = native.map(fd, 0, 8192, true);
    const view = new Float64Array(memory);
    view[1] = 1.5;
    native.unmap(memory);
    native.unmap(memory);
    expect(memory.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(() => native.unmap(new ArrayBuffer(8))).toThrow(TypeError);
    native.close(fd);
  });

  it('reports mmap errors with errno', () => {
    const fd = native.memfdCreate('badmap');
    expect(() => native.map(fd, 1, 4096, true, 'memfd:badmap')).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'mmap', path: 'memfd:badmap' }),
    );
    native.close(fd);
  });
});

describe('register window', () => {
  it('does exact aligned 32-bit accesses and refuses unaligned or outside ones', () => {
    const fd = native.memfdCreate('regs');
    native.ftruncate(fd, 4096);
    const regs = native.map(fd, 0, 256, true);
    native.write32(regs, 12, 0xdeadbeef);
    expect(native.read32(regs, 12)).toBe(0xdeadbeef);
    expect(new DataView(regs).getUint32(12, true)).toBe(0xdeadbeef);
    expect(() => native.read32(regs, 2)).toThrow(RangeError);
    expect(() => native.read32(regs, 256)).toThrow(RangeError);
    expect(() => native.write32(regs, 0, 2 ** 32)).toThrow(RangeError);
    native.unmap(regs);
    expect(() => native.read32(regs, 0)).toThrow(/closed/);
    native.close(fd);
  });
});

describe('garbage from JavaScript', () => {
  it('is a TypeError, never a crash', () => {
    const calls: Array<() => unknown> = [
      () => (native.map as (...a: unknown[]) => unknown)('x', 0, 1, true),
      () => (native.map as (...a: unknown[]) => unknown)(-1, 0, 1, true),
      () => (native.map as (...a: unknown[]) => unknown)(0, -5, 1, true),
      () => (native.map as (...a: unknown[]) => unknown)(0, 0, 1, 'yes'),
      () => (native.unmap as (...a: unknown[]) => unknown)({}),
      () => (native.read32 as (...a: unknown[]) => unknown)(null, 0),
      () => (native.eventfdSignal as (...a: unknown[]) => unknown)(1.5),
      () => (native.socketSend as (...a: unknown[]) => unknown)(0, 'not bytes'),
      () => (native.socketReceive as (...a: unknown[]) => unknown)(0, new Uint16Array(4)),
      () => (native.open as (...a: unknown[]) => unknown)(42, 0),
      () => new (native.Watcher as unknown as new (...a: unknown[]) => unknown)(0, 'not a function'),
      () => (native.close as (...a: unknown[]) => unknown)(NaN),
      () => {
        const fd = native.eventfdCreate();
        const w = new native.Watcher(fd, () => {});
        try {
          w.start(1024);
        } finally {
          w.close();
          native.close(fd);
        }
      },
    ];
    for (const call of calls) expect(call).toThrow(TypeError);
  });
});

describe('waitWord', () => {
  const waitWord = native.waitWord as (...a: unknown[]) => number;
  const nameOf = (call: () => unknown): string => {
    try {
      call();
    } catch (error) {
      return (error as Error).constructor.name;
    }
    return 'returned';
  };

  it('refuses a misaligned or out-of-bounds word, a closed buffer, a wait with neither fd nor timeout', () => {
    const buffer = new ArrayBuffer(16);
    expect(nameOf(() => waitWord(buffer, 2, 0, -1, 0, 0))).toBe('RangeError');
    expect(nameOf(() => waitWord(buffer, 16, 0, -1, 0, 0))).toBe('RangeError');
    expect(nameOf(() => waitWord(buffer, 2 ** 40, 0, -1, 0, 0))).toBe('RangeError');
    expect(nameOf(() => waitWord(buffer, 0, 2 ** 32, -1, 0, 0))).toBe('RangeError');
    expect(nameOf(() => waitWord(buffer, 0, 0, -1, 0, -1))).toBe('RangeError');
    expect(nameOf(() => waitWord(new SharedArrayBuffer(16), 0, 0, -1, 0, 0))).toBe('TypeError');
    const detached = new ArrayBuffer(16);
    structuredClone(detached, { transfer: [detached] });
    expect(nameOf(() => waitWord(detached, 0, 0, -1, 0, 0))).toBe('Error');
  });

  it('takes an fd of -1 (none) or 0..2^31-1 exactly, and nanoseconds as safe integers', () => {
    const buffer = new ArrayBuffer(16);
    for (const fd of [4294967295, -1.5, -2, 1.5, 2 ** 31, Number.NaN, '3', null]) {
      expect(nameOf(() => waitWord(buffer, 0, 0, fd, 0, 0)), String(fd)).toBe('TypeError');
    }
    for (const ns of [-2, 1.5, 2 ** 53, Infinity]) {
      expect(nameOf(() => waitWord(buffer, 0, 0, -1, ns, 0)), `spin ${ns}`).toBe('TypeError');
      expect(nameOf(() => waitWord(buffer, 0, 0, -1, 0, ns)), `timeout ${ns}`).toBe('TypeError');
    }
  });

  it('returns WAIT_WORD for a word that differs, 0 after the timeout, WAIT_READABLE for a readable fd', () => {
    const buffer = new ArrayBuffer(16);
    new Uint32Array(buffer)[1] = 7;
    expect(waitWord(buffer, 4, 6, -1, 1000, 1000)).toBe(native.WAIT_WORD);
    expect(waitWord(buffer, 4, 7, -1, 1000, 1000)).toBe(0);
    const fd = native.eventfdCreate();
    try {
      native.eventfdSignal(fd);
      expect(waitWord(buffer, 4, 7, fd, 0, -1)).toBe(native.WAIT_READABLE);
      // A spin longer than 1 s is cut to 1 s: the readable fd is seen after it, not in hours.
      expect(waitWord(buffer, 4, 7, fd, 1e15, -1)).toBe(native.WAIT_READABLE);
    } finally {
      native.close(fd);
    }
  });
});

describe('worker threads', () => {
  it('load the addon, share memory with the main thread, and close what they leave open on exit', async () => {
    const path = shmPath('worker');
    cleanup.push(path);
    const dev = openFile(path, { size: 4096, create: true });
    const words = new Int32Array(dev.memory);
    Atomics.store(words, 0, 99);
    const before = openFdCount();
    const worker = new Worker(join(fixtures, 'core-worker.mjs'), { workerData: { path } });
    const [reply] = (await once(worker, 'message')) as [{ seen: number; leaked: number[] }];
    expect(reply.seen).toBe(99);
    expect(Atomics.load(words, 3)).toBe(0xbeef);
    for (const fd of reply.leaked) expect(fdTarget(fd)).not.toBeNull();
    worker.postMessage('exit');
    await once(worker, 'exit');
    for (const fd of reply.leaked) expect(fdTarget(fd), `fd ${fd}`).toBeNull();
    expect(openFdCount()).toBe(before);
    dev.close();
  });

});

describe('file modes and seals are checked as numbers before any cast', () => {
  it('socketListen refuses a mode beyond 0o7777 (2^31, 2^32 + 0o777) and creates no socket file', () => {
    for (const mode of [2 ** 31, 2 ** 32 + 0o777, 0o10000]) {
      const sockPath = shmPath('mode');
      cleanup.push(sockPath);
      expect(() => native.socketListen(sockPath, 128, mode)).toThrow(/mode must be an integer 0\.\.0o7777/);
      expect(existsSync(sockPath)).toBe(false);
    }
  });

  it('fchmod refuses 2^32 + 0o777 instead of applying 0o777', () => {
    const fd = native.memfdCreateSealable('fchmod');
    try {
      native.fchmod(fd, 0o600);
      expect(() => native.fchmod(fd, 2 ** 32 + 0o777)).toThrow(/mode must be an integer 0\.\.0o7777/);
      expect(() => native.fchmod(fd, 2 ** 31)).toThrow(/mode must be an integer 0\.\.0o7777/);
      expect(native.fstat(fd).mode & 0o7777).toBe(0o600);
    } finally {
      native.close(fd);
    }
  });

  it('addSeals refuses bits beyond the known F_SEAL_* seals (2^32 + F_SEAL_SHRINK is not F_SEAL_SHRINK)', () => {
    const fd = native.memfdCreateSealable('seals');
    try {
      expect(() => native.addSeals(fd, 2 ** 32 + native.seals.SHRINK)).toThrow(/seals must be/);
      expect(() => native.addSeals(fd, 2 ** 31)).toThrow(/seals must be/);
      expect(native.getSeals(fd)).toBe(0);
    } finally {
      native.close(fd);
    }
  });
});
