// Bad arguments to the server and to connect() are typed errors at the call, never a timeout
// or a server that cannot keep its promise.
import { totalmem } from 'node:os';
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const invalid = { code: 'ERR_IVSHMEM_INVALID_ARGUMENT' };

describe('IvshmemServer.listen()', () => {
  it('refuses a size larger than the machine\'s memory before creating anything', async () => {
    const socket = shmPath('sock');
    cleanup.push(() => rmSync(socket, { force: true }));
    await expect(IvshmemServer.listen({ socket, size: 2 ** 40 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SIZE', message: expect.stringContaining(String(totalmem())) });
    await expect(IvshmemServer.listen({ socket, size: 2 ** 52 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SIZE' });
  });
});

describe('connect() options', () => {
  it.each([-1, 'x', NaN, 0, Infinity, 2 ** 31])('refuses timeout %s with ERR_IVSHMEM_INVALID_ARGUMENT, not a timeout', async (timeout) => {
    const socket = shmPath('sock');
    const server = await IvshmemServer.listen({ socket, size: 1 << 16 });
    cleanup.push(() => server.close());
    await expect(connect(socket, { timeout: timeout as number })).rejects.toMatchObject({ ...invalid, message: expect.stringContaining('timeout') });
  });
});
