// Bad arguments to the bus are typed errors at the call: a promise that can never settle is a
// hang in the caller.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { attach, openFile } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

describe('bus.accept()', () => {
  it.each([42, '', 'x'.repeat(65), null, undefined])('rejects the channel name %o with ERR_IVSHMEM_INVALID_ARGUMENT', async (name) => {
    const path = shmPath('bus');
    const dev = openFile(path, { size: 1 << 20, create: true });
    cleanup.push(() => (dev.close(), rmSync(path, { force: true })));
    const bus = await attach(dev, { name: 'a', heartbeat: 1000 });
    cleanup.push(() => bus.close());
    await expect(bus.accept(name as string)).rejects.toMatchObject({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT', message: expect.stringContaining('name') });
  });
});

describe('bus aborts', () => {
  it('accept() and waitForPeer() reject with an AbortError with code ABORT_ERR', async () => {
    const path = shmPath('bus');
    const dev = openFile(path, { size: 1 << 20, create: true });
    cleanup.push(() => (dev.close(), rmSync(path, { force: true })));
    const bus = await attach(dev, { name: 'a', heartbeat: 1000 });
    cleanup.push(() => bus.close());
    const controller = new AbortController();
    const pending = [bus.accept('x', { signal: controller.signal }), bus.waitForPeer('nobody', { signal: controller.signal })];
    controller.abort();
    for (const p of pending) await expect(p).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: controller.signal.reason });
  });
});
