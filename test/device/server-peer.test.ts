// Regressions of the client handshake and doorbells (issue 11 defects 1 and 2, issue 14 items 4
// and 6): concurrent connects, what the client checks of the memory it is handed, doorbells that
// cannot be written, and protocol errors that say what really came.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer, type ServerPeerDevice } from '../../src/index.js';
import { native } from '../../src/native.js';
import { shmPath } from '../helpers.js';
import { scriptedServer, type Step } from '../protocol/scripted-server.js';

const cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function scripted(steps: Step[], options: { shm?: number } = {}): string {
  const script = scriptedServer(steps, options);
  cleanup.push(() => script.close());
  return script.path;
}

async function server(options: { vectors?: number } = {}): Promise<IvshmemServer> {
  const socket = shmPath('sock');
  const s = await IvshmemServer.listen({ socket, ...options });
  cleanup.push(async () => {
    await s.close();
    rmSync(socket, { force: true });
  });
  return s;
}

function plainMemfd(size = 4096): number {
  const fd = native.memfdCreate('test');
  native.ftruncate(fd, size);
  return fd;
}

function sealedMemfd(size = 4096): number {
  const fd = native.memfdCreateSealable('test');
  native.ftruncate(fd, size);
  native.addSeals(fd, native.seals.SHRINK | native.seals.GROW | native.seals.SEAL);
  return fd;
}

// A pipe as a FIFO: its read end, a blocking write end to hand over, and a separate non-blocking
// write end (its own open file, so the one handed over stays blocking) to fill it with.
function pipe(): { read: number; write: number; filler: number } {
  const fifo = shmPath('fifo');
  execFileSync('mkfifo', [fifo]);
  const read = openSync(fifo, 'r+');
  const write = openSync(fifo, 'w');
  const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  rmSync(fifo);
  return { read, write, filler };
}

describe('connect() while other peers come and go (issue 11, defect 1)', () => {
  it('3 peers connecting at once without `vectors` all succeed, 10 times over', async () => {
    const s = await server();
    let failures = 0;
    for (let trial = 0; trial < 10; trial++) {
      const results = await Promise.allSettled([0, 1, 2].map(() => connect(s.socketPath)));
      for (const r of results) {
        if (r.status === 'rejected') failures++;
        else r.value.close();
      }
    }
    expect(failures).toBe(0);
  });

  it('takes another peer that joins right after our own eventfds as a connect, not a protocol error', async () => {
    const path = scripted([{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }, { value: 3, fd: 'eventfd' }, { value: 4, fd: 'eventfd' }, { value: 4, fd: 'eventfd' }]);
    const dev = await connect(path);
    cleanup.push(() => dev.close());
    expect(dev.id).toBe(3);
    expect(dev.vectors).toBe(1);
    await new Promise((r) => setImmediate(r));
    expect(dev.peers).toEqual([{ id: 4, vectors: 2 }]);
  });

  it('takes a disconnect of another peer right after our own eventfds as normal traffic', async () => {
    const path = scripted([{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }, { value: 1, fd: 'eventfd' }, { value: 3, fd: 'eventfd' }, { value: 1 }]);
    const dev = await connect(path);
    cleanup.push(() => dev.close());
    expect(dev.peers).toEqual([]);
  });

  it('with `vectors`, still refuses a server that gives fewer own eventfds than asked', async () => {
    const path = scripted([{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }, { value: 3, fd: 'eventfd' }, { value: 4, fd: 'eventfd' }]);
    await expect(connect(path, { vectors: 2 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL', message: expect.stringMatching(/1 of our own 2 eventfds/) });
  });
});

describe('protocol errors say what came (issue 14, item 6)', () => {
  it('a version message that carries an fd is refused for the fd, not for its version', async () => {
    const path = scripted([{ value: 0, fd: 'eventfd' }]);
    const error = await connect(path).catch((e: Error) => e);
    expect(error).toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL' });
    expect((error as Error).message).not.toMatch(/version 0 \(expected 0\)/);
    expect((error as Error).message).toMatch(/version message came with an fd/);
  });

  it('a version of 2^62 is named as sent, not NaN', async () => {
    const path = scripted([{ value: 2n ** 62n }]);
    const error = await connect(path).catch((e: Error) => e);
    expect(error).toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL' });
    expect((error as Error).message).toMatch(/unsupported protocol version 4611686018427387904 \(expected 0\)/);
  });

  it('a peer ID of -2^63 is named as sent', async () => {
    const path = scripted([{ value: 0 }, { value: -(2n ** 63n) }]);
    await expect(connect(path)).rejects.toMatchObject({ message: expect.stringMatching(/bad peer ID -9223372036854775808/) });
  });
});

describe('the memory a client is handed (issue 11, defect 2)', () => {
  const greeting = (shm: 'shm'): Step[] => [{ value: 0 }, { value: 1 }, { value: -1, fd: shm }, { value: 1, fd: 'eventfd' }];

  it('refuses unsealed memory with sealedMemory: "require", before mapping it', async () => {
    const path = scripted(greeting('shm'), { shm: plainMemfd() });
    await expect(connect(path, { vectors: 1, sealedMemory: 'require' })).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_UNSEALED_MEMORY',
      message: expect.stringMatching(/can shrink it/),
    });
  });

  it('refuses unsealed memory by default, saying what is wrong and what to do', async () => {
    const path = scripted(greeting('shm'), { shm: plainMemfd() });
    await expect(connect(path, { vectors: 1 })).rejects.toMatchObject({
      code: 'ERR_IVSHMEM_UNSEALED_MEMORY',
      message: expect.stringMatching(/SIGBUS.*without -M\/--shm.*sealedMemory: 'warn'/s),
    });
  });

  it("with sealedMemory: 'warn', warns about unsealed memory and connects", async () => {
    const path = scripted(greeting('shm'), { shm: plainMemfd() });
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    cleanup.push(() => void process.off('warning', onWarning));
    const dev = await connect(path, { vectors: 1, sealedMemory: 'warn' });
    cleanup.push(() => dev.close());
    await new Promise((r) => setImmediate(r));
    expect(warnings.map((w) => (w as Error & { code?: string }).code)).toContain('IVSHMEM_UNSEALED_MEMORY');
  });

  it('accepts memory sealed against shrinking and growing, without a warning', async () => {
    const shm = sealedMemfd();
    const path = scripted(greeting('shm'), { shm });
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    cleanup.push(() => void process.off('warning', onWarning));
    const dev = await connect(path, { vectors: 1, sealedMemory: 'require' });
    cleanup.push(() => dev.close());
    await new Promise((r) => setImmediate(r));
    expect(dev.size).toBe(4096);
    expect(warnings).toEqual([]);
  });

  it('rejects a bad sealedMemory option', async () => {
    await expect(connect('/nonexistent', { sealedMemory: 'maybe' as 'warn' })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' });
  });

  it('our server hands out memory no peer can shrink or grow', async () => {
    const s = await server();
    const raw = native.socketConnect(s.socketPath);
    cleanup.push(() => native.close(raw));
    const buf = new Uint8Array(8);
    let shm = -1;
    for (let got = 0; got < 3; ) {
      const r = native.socketReceive(raw, buf);
      if (r === null) {
        await new Promise((res) => setImmediate(res));
        continue;
      }
      got++;
      if (r.fds.length) shm = r.fds[0]!;
    }
    cleanup.push(() => native.close(shm));
    const seals = native.getSeals(shm);
    expect(seals & native.seals.SHRINK).toBe(native.seals.SHRINK);
    expect(seals & native.seals.GROW).toBe(native.seals.GROW);
    expect(seals & native.seals.SEAL).toBe(native.seals.SEAL);
    expect(() => native.ftruncate(shm, 0)).toThrow(expect.objectContaining({ code: 'EPERM' }));
    expect(native.fstat(shm).size).toBe(s.size);
  });
});

describe('doorbells that cannot be written (issue 14, item 4)', () => {
  function nonBlocking(fd: number): boolean {
    const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
    return (parseInt(flags, 8) & 0o4000) !== 0;
  }
  // The device's own copy of a pipe we handed over: the fd of ours pointing at the same pipe.
  function copiesOf(fd: number): number[] {
    const target = readlinkSync(`/proc/self/fd/${fd}`);
    return readdirSync('/proc/self/fd').map(Number).filter((n) => n !== fd && (() => {
      try {
        return readlinkSync(`/proc/self/fd/${n}`) === target;
      } catch {
        return false;
      }
    })());
  }

  it('a full doorbell pipe handed during setup neither blocks nor ends the connection', async () => {
    const { read: readEnd, write: writeEnd, filler } = pipe();
    cleanup.push(() => (closeSync(readEnd), closeSync(writeEnd), closeSync(filler)));
    // Fill it: a blocking write to it from now on would stall the event loop for good.
    const chunk = new Uint8Array(65536);
    while (tryWrite(filler, chunk)) {
      /* keep filling */
    }
    const path = scripted([{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }, { value: 1, fd: writeEnd }, { value: 3, fd: 'eventfd' }]);
    const dev: ServerPeerDevice = await connect(path, { vectors: 1 });
    cleanup.push(() => dev.close());
    const copies = copiesOf(writeEnd).filter((fd) => fd !== readEnd && fd !== filler);
    expect(copies.length).toBe(1);
    // Checked before ringing: ringing a blocking full pipe would hang this test process.
    expect(nonBlocking(copies[0]!)).toBe(true);
    expect(() => dev.ring(1, 0)).not.toThrow();
    expect(dev.connected).toBe(true);
  });

  it('a doorbell pipe whose reader is gone (EPIPE) drops that doorbell, not the connection', async () => {
    const { read: readEnd, write: writeEnd, filler } = pipe();
    cleanup.push(() => (closeSync(writeEnd), closeSync(filler)));
    const path = scripted([{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }, { value: 1, fd: writeEnd }, { value: 2, fd: 'eventfd' }, { value: 3, fd: 'eventfd' }]);
    const dev: ServerPeerDevice = await connect(path, { vectors: 1 });
    cleanup.push(() => dev.close());
    closeSync(readEnd);
    const disconnects: unknown[] = [];
    dev.on('disconnect', (e) => disconnects.push(e));
    expect(() => dev.ring(1, 0)).not.toThrow();
    expect(() => dev.ring(1, 0)).not.toThrow();
    expect(dev.connected).toBe(true);
    expect(() => dev.ring(2, 0)).not.toThrow();
    const self = dev.waitInterrupt(0);
    dev.ring(3, 0);
    expect(await self).toBe(1);
    expect(disconnects).toEqual([]);
  });
});

function tryWrite(fd: number, chunk: Uint8Array): boolean {
  try {
    return writeSync(fd, chunk) > 0;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return false;
    throw error;
  }
}
