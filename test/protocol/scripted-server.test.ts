// A scripted, misbehaving server: connect() must turn every violation into a typed error and
// leak nothing.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { native } from '../../src/native.js';
import { openFdCount, shmPath } from '../helpers.js';

type Step = { value: number; fd?: 'shm' | 'eventfd'; split?: boolean } | 'close' | 'mid-fd';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function int64(value: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt(value), true);
  return b;
}

// Serves one client with the given steps, writing synchronously (the messages are tiny).
function scriptedServer(steps: Step[]): string {
  const path = shmPath('proto');
  const listener = native.socketListen(path);
  const shm = native.memfdCreate('proto');
  native.ftruncate(shm, 4096);
  const opened: number[] = [listener, shm];
  cleanup.push(() => {
    for (const fd of opened) native.close(fd);
    rmSync(path, { force: true });
  });
  const watcher = new native.Watcher(listener, () => {
    const client = native.socketAccept(listener);
    if (client < 0) return;
    watcher.close();
    opened.push(client);
    try {
      play(client);
    } catch {
      // The client may be gone already (EPIPE): that is its business.
    }
  });
  const play = (client: number): void => {
    for (const step of steps) {
      if (step === 'close') {
        native.socketShutdown(client);
        return;
      }
      if (step === 'mid-fd') {
        // The kernel glues both halves into one read if they are queued together: let the
        // client take the first half before the second, fd and all, arrives.
        const bytes = int64(5);
        native.socketSend(client, bytes.subarray(0, 4));
        const efd = native.eventfdCreate();
        opened.push(efd);
        setTimeout(() => {
          try {
            native.socketSend(client, bytes.subarray(4), efd);
          } catch {
            // Already dropped by the client.
          }
        }, 100);
        return;
      }
      const bytes = int64(step.value);
      let fd = -1;
      if (step.fd === 'shm') fd = shm;
      if (step.fd === 'eventfd') opened.push((fd = native.eventfdCreate()));
      if (step.split) {
        for (let i = 0; i < 8; i++) native.socketSend(client, bytes.subarray(i, i + 1), i === 0 ? fd : -1);
      } else {
        native.socketSend(client, bytes, fd);
      }
    }
  };
  watcher.start(native.READABLE);
  return path;
}

const good: Step[] = [{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }];

describe('connect() against a misbehaving server', () => {
  it('assembles messages that arrive a byte at a time', async () => {
    const path = scriptedServer([
      { value: 0, split: true },
      { value: 3, split: true },
      { value: -1, fd: 'shm', split: true },
      { value: 1, fd: 'eventfd', split: true },
      { value: 3, fd: 'eventfd', split: true },
      { value: 3, fd: 'eventfd', split: true },
    ]);
    const dev = await connect(path, { vectors: 2 });
    expect(dev.id).toBe(3);
    expect(dev.vectors).toBe(2);
    expect(dev.size).toBe(4096);
    expect(dev.peers).toEqual([{ id: 1, vectors: 1 }]);
    dev.close();
  });

  const cases: Array<[string, Step[], RegExp]> = [
    ['an unknown protocol version', [{ value: 1 }], /unsupported protocol version 1/],
    ['a peer ID out of range', [{ value: 0 }, { value: 70000 }], /bad peer ID 70000/],
    ['a shared-memory message without an fd', [{ value: 0 }, { value: 2 }, { value: -1 }], /without an fd/],
    ['a version message with an fd', [{ value: 0, fd: 'eventfd' }], /unsupported protocol version/],
    ['an fd in the middle of a message', [{ value: 0 }, { value: 2 }, 'mid-fd'], /an fd came in the middle of a message/],
    ['an eventfd for a peer ID out of range', [...good, { value: 65536, fd: 'eventfd' }], /peer ID 65536 out of range/],
    ['another peer\'s eventfd after our own', [...good, { value: 3, fd: 'eventfd' }, { value: 4, fd: 'eventfd' }], /peer 4's eventfd after our own/],
    ['a hang-up during setup', [...good, 'close'], /closed the connection during setup/],
  ];
  for (const [what, steps, message] of cases) {
    it(`refuses ${what} with ERR_IVSHMEM_PROTOCOL and leaks no fd`, async () => {
      const path = scriptedServer(steps);
      const before = openFdCount();
      await expect(connect(path, { vectors: 2 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL', path, message: expect.stringMatching(message) });
      // Only the scripted server's side may have grown: its accepted socket and its eventfds.
      const made = 1 + steps.filter((s) => s === 'mid-fd' || (typeof s === 'object' && s.fd === 'eventfd')).length;
      expect(openFdCount()).toBeLessThanOrEqual(before + made);
    });
  }

  it('gives up on a silent server after the timeout', async () => {
    const path = scriptedServer([]);
    await expect(connect(path, { timeout: 200 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_TIMEOUT', path });
  });

  it('stops when aborted', async () => {
    const path = scriptedServer([{ value: 0 }]);
    const controller = new AbortController();
    const pending = connect(path, { signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });
});
