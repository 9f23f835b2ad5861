import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { IvshmemError, openFile } from '../../src/index.js';
import { child, exitCode, message, openFdCount, shmPath } from '../helpers.js';

const cleanup: string[] = [];
afterEach(() => {
  for (const path of cleanup.splice(0)) rmSync(path, { force: true });
});
function tempShm(tag: string): string {
  const path = shmPath(tag);
  cleanup.push(path);
  return path;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as IvshmemError).code;
  }
  return undefined;
}

describe('openFile', () => {
  it('creates a zero-filled file of the asked size and maps it', () => {
    const path = tempShm('create');
    const dev = openFile(path, { size: 65536, create: true });
    expect(dev.backend).toBe('file');
    expect(dev.size).toBe(65536);
    expect(dev.memory.byteLength).toBe(65536);
    expect(new Uint8Array(dev.memory).every((b) => b === 0)).toBe(true);
    expect(dev.vectors).toBe(0);
    expect(dev.id).toBe(0);
    dev.close();
  });

  it('lets two processes see each other\'s writes', async () => {
    const path = tempShm('two');
    const dev = openFile(path, { size: 4096, create: true });
    const words = new Int32Array(dev.memory);
    Atomics.store(words, 0, 0x1234);
    const peer = child('core-peer.mjs', ['map', path]);
    expect(await message(peer)).toEqual({ seen: 0x1234 });
    expect(Atomics.load(words, 1)).toBe(0x5eed);
    Atomics.store(words, 2, 0x7777);
    peer.send('go');
    expect(await message(peer)).toEqual({ seen: 0x7777 });
    expect(await exitCode(peer)).toBe(0);
    dev.close();
  });

  it('close() is idempotent, releases its fds and detaches memory', () => {
    const path = tempShm('close');
    const before = openFdCount();
    const dev = openFile(path, { size: 8192, create: true });
    const view = new Uint8Array(dev.memory);
    dev.close();
    dev.close();
    expect(dev.closed).toBe(true);
    expect(dev.memory.byteLength).toBe(0);
    // A view made before close is now empty, not a window on unmapped memory.
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(openFdCount()).toBe(before);
  });

  it('maps a prefix of a larger file and refuses a size beyond its end', () => {
    const path = tempShm('sizes');
    writeFileSync(path, Buffer.alloc(8192, 1));
    const dev = openFile(path, { size: 4096 });
    expect(dev.size).toBe(4096);
    dev.close();
    let error: IvshmemError | undefined;
    try {
      openFile(path, { size: 16384 });
    } catch (e) {
      error = e as IvshmemError;
    }
    expect(error).toBeInstanceOf(IvshmemError);
    expect(error!.code).toBe('ERR_IVSHMEM_SIZE');
    expect(error!.path).toBe(path);
    expect(error!.message).toContain(path);
    expect(error!.message).toContain('16384');
  });

  it('grows an existing smaller file when creating, and never shrinks one', () => {
    const path = tempShm('grow');
    writeFileSync(path, Buffer.from('abc'));
    const dev = openFile(path, { size: 8192, create: true });
    expect(dev.size).toBe(8192);
    expect(Buffer.from(dev.memory, 0, 4)).toEqual(Buffer.from([0x61, 0x62, 0x63, 0]));
    dev.close();
    const small = openFile(path, { size: 4096, create: true });
    expect(small.size).toBe(4096);
    small.close();
    expect(openFile(path).size).toBe(8192);
    expect(codeOf(() => openFile(tempShm('nosize'), { create: true }))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
  });

  it('refuses an empty file without a size', () => {
    const path = tempShm('empty');
    writeFileSync(path, '');
    expect(codeOf(() => openFile(path))).toBe('ERR_IVSHMEM_SIZE');
  });

  it('reports a missing file as ENOENT naming the path', () => {
    const path = tempShm('missing');
    let error: IvshmemError | undefined;
    try {
      openFile(path);
    } catch (e) {
      error = e as IvshmemError;
    }
    expect(error).toBeInstanceOf(IvshmemError);
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'open', path, errno: 2 });
    expect(error!.message).toContain(path);
  });

  it('reports a file it may not open as EACCES naming the path', async () => {
    const path = tempShm('private');
    writeFileSync(path, Buffer.alloc(4096));
    chmodSync(path, 0o600);
    // As root the kernel would let us in: ask an unprivileged process instead.
    const uid = process.getuid?.() === 0 ? 65534 : undefined;
    if (uid === undefined) chmodSync(path, 0o000);
    const peer = child('core-peer.mjs', ['open', path], uid === undefined ? {} : { uid });
    const result = await message<Record<string, string>>(peer);
    expect(result).toMatchObject({ code: 'EACCES', syscall: 'open', path, name: 'IvshmemError' });
    expect(result.message).toContain(path);
    await exitCode(peer);
  });

  it('rejects zero, negative, fractional and absurd sizes with a clear error', () => {
    const path = tempShm('badsize');
    for (const size of [0, -1, 1.5, Number.NaN, 2 ** 60]) {
      expect(codeOf(() => openFile(path, { size, create: true })), String(size)).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    }
  });

  it('has no doorbell and no interrupts, and says so', async () => {
    const path = tempShm('nodoorbell');
    const dev = openFile(path, { size: 4096, create: true });
    expect(() => dev.ring(1, 0)).toThrow(/no doorbell on a file-backed device/i);
    expect(codeOf(() => dev.ring(1, 0))).toBe('ERR_IVSHMEM_NO_DOORBELL');
    await expect(dev.waitInterrupt(0)).rejects.toMatchObject({ code: 'ERR_IVSHMEM_NO_INTERRUPTS' });
    await expect(dev.interrupts().next()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_NO_INTERRUPTS' });
    dev.close();
  });

  it('throws, and does not crash, when used after close', async () => {
    const path = tempShm('after');
    const dev = openFile(path, { size: 4096, create: true });
    dev.close();
    expect(codeOf(() => dev.ring(0, 0))).toBe('ERR_IVSHMEM_CLOSED');
    await expect(dev.waitInterrupt(0)).rejects.toMatchObject({ code: 'ERR_IVSHMEM_CLOSED' });
    expect(() => new Uint32Array(dev.memory, 0, 1)).toThrow(/detached/);
  });

  it('rejects garbage arguments with clear errors', () => {
    for (const bad of [undefined, null, 42, {}, '']) {
      expect(codeOf(() => openFile(bad as unknown as string))).toBe('ERR_IVSHMEM_INVALID_ARGUMENT');
    }
    expect(codeOf(() => openFile(tempShm('x'), { size: '4096' as unknown as number, create: true }))).toBe(
      'ERR_IVSHMEM_INVALID_ARGUMENT',
    );
  });
});
