// Regressions of the files the library creates (issue 11, defects 4 and 5): planted symlinks are
// refused, never followed; the socket and the memory are owner-only whatever the umask, or
// exactly the mode asked for.
import { existsSync, lstatSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer, openFile } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function path(tag: string): string {
  const p = shmPath(tag);
  cleanup.push(() => rmSync(p, { force: true }));
  return p;
}

// A file that must not change, and a symlink to it where the library is about to write.
function plant(): { victim: string; link: string } {
  const victim = path('victim');
  writeFileSync(victim, 'precious');
  const link = path('link');
  symlinkSync(victim, link);
  return { victim, link };
}

function withUmask<T>(mask: number, f: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  return f().finally(() => process.umask(old));
}

const mode = (p: string): number => lstatSync(p).mode & 0o7777;

describe('planted symlinks (issue 11, defect 4)', () => {
  it('openFile(link, { create }) refuses a symlink and leaves its target alone', () => {
    const { victim, link } = plant();
    expect(() => openFile(link, { size: 4096, create: true })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_SYMLINK', path: link, message: expect.stringMatching(/symbolic link/) }));
    expect(readFileSync(victim, 'utf8')).toBe('precious');
  });

  it('openFile(link, { create }) refuses a dangling symlink and creates nothing behind it', () => {
    const target = path('target');
    const link = path('dangling');
    symlinkSync(target, link);
    expect(() => openFile(link, { size: 4096, create: true })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_SYMLINK' }));
    expect(existsSync(target)).toBe(false);
  });

  it('the server refuses a symlink as its memory, also with reuseShm', async () => {
    const { victim, link } = plant();
    const socket = path('sock');
    await expect(IvshmemServer.listen({ socket, shm: link, reuseShm: true, size: 4096 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SYMLINK', path: link });
    await expect(IvshmemServer.listen({ socket, shm: link, size: 4096 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SYMLINK', path: link });
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(existsSync(socket)).toBe(false);
  });

  it('the server takes only a regular file as its memory, and opens none that exists unless told to reuse it', async () => {
    const { execFileSync } = await import('node:child_process');
    const fifo = path('fifo');
    execFileSync('mkfifo', [fifo]);
    const socket = path('sock');
    await expect(IvshmemServer.listen({ socket, shm: fifo, size: 4096 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringMatching(/already exists/) });
    await expect(IvshmemServer.listen({ socket, shm: fifo, size: 4096, reuseShm: true })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringMatching(/not a regular file/) });
  });

  it('openFile on a new path creates the file with create, and opens an existing regular one', () => {
    const p = path('plain');
    const a = openFile(p, { size: 4096, create: true });
    new Uint8Array(a.memory)[0] = 9;
    const b = openFile(p, { size: 4096, create: true });
    expect(new Uint8Array(b.memory)[0]).toBe(9);
    a.close();
    b.close();
  });
});

describe('owner-only files whatever the umask (issue 11, defect 5)', () => {
  it('under umask 000 the socket and the memory file are 0600', async () => {
    const socket = path('sock');
    const shm = path('shm');
    const server = await withUmask(0, () => IvshmemServer.listen({ socket, shm, size: 4096 }));
    cleanup.push(() => server.close());
    expect(mode(socket)).toBe(0o600);
    expect(mode(shm)).toBe(0o600);
  });

  it('under umask 0277 the owner can still connect: the socket is exactly 0600', async () => {
    const socket = path('sock');
    const server = await withUmask(0o277, () => IvshmemServer.listen({ socket, size: 4096 }));
    cleanup.push(() => server.close());
    expect(mode(socket)).toBe(0o600);
    const dev = await connect(socket);
    dev.close();
  });

  it('an explicit mode (group access) is applied exactly, whatever the umask', async () => {
    const socket = path('sock');
    const shm = path('shm');
    const server = await withUmask(0o077, () => IvshmemServer.listen({ socket, shm, size: 4096, mode: 0o660 }));
    cleanup.push(() => server.close());
    expect(mode(socket)).toBe(0o660);
    expect(mode(shm)).toBe(0o660);
  });

  it('openFile({ create }) makes the file exactly 0600 under umask 000 and 0277', () => {
    for (const mask of [0, 0o277]) {
      const p = path('file');
      const dev = withUmaskSync(mask, () => openFile(p, { size: 4096, create: true }));
      dev.close();
      expect(mode(p)).toBe(0o600);
    }
  });

  it('rejects a mode that is not a permission mask', async () => {
    for (const bad of [-1, 0o10000, 1.5, '0600']) {
      await expect(IvshmemServer.listen({ socket: path('sock'), mode: bad as number })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringMatching(/mode/) });
    }
  });
});

function withUmaskSync<T>(mask: number, f: () => T): T {
  const old = process.umask(mask);
  try {
    return f();
  } finally {
    process.umask(old);
  }
}

describe('ivshmem server --mode', () => {
  it('creates the socket with the octal mode given, whatever the umask', async () => {
    const { spawn } = await import('node:child_process');
    const { join } = await import('node:path');
    const socket = path('sock');
    const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
    const proc = withUmaskSync(0o077, () => spawn(process.execPath, [cli, 'server', '-S', socket, '--mode', '0640'], { stdio: ['ignore', 'pipe', 'inherit'] }));
    cleanup.push(() => void proc.kill('SIGTERM'));
    let out = '';
    await new Promise<void>((resolve) => {
      proc.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('listening on')) resolve();
      });
    });
    expect(mode(socket)).toBe(0o640);
    expect(out).toMatch(/mode 0640.*a sealed memfd/);
  });
});
