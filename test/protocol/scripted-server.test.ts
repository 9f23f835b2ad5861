// A scripted, misbehaving server: connect() must turn every violation into a typed error and
// leak nothing.
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { openFdCount } from '../helpers.js';
import { scriptedServer, type Step } from './scripted-server.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function scripted(steps: Step[]): string {
  const script = scriptedServer(steps);
  cleanup.push(() => script.close());
  return script.path;
}

const good: Step[] = [{ value: 0 }, { value: 3 }, { value: -1, fd: 'shm' }];

describe('connect() against a misbehaving server', () => {
  it('assembles messages that arrive a byte at a time', async () => {
    const path = scripted([
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
    ['a version message with an fd', [{ value: 0, fd: 'eventfd' }], /the version message came with an fd/],
    ['an fd in the middle of a message', [{ value: 0 }, { value: 2 }, 'mid-fd'], /an fd came in the middle of a message/],
    ['an eventfd for a peer ID out of range', [...good, { value: 65536, fd: 'eventfd' }], /peer ID 65536 out of range/],
    ['fewer own eventfds than `vectors` before another peer\'s', [...good, { value: 3, fd: 'eventfd' }, { value: 4, fd: 'eventfd' }], /only 1 of our own 2 eventfds came before a message about peer 4/],
    ['a hang-up during setup', [...good, 'close'], /closed the connection during setup/],
  ];
  for (const [what, steps, message] of cases) {
    it(`refuses ${what} with ERR_IVSHMEM_PROTOCOL and leaks no fd`, async () => {
      const path = scripted(steps);
      const before = openFdCount();
      await expect(connect(path, { vectors: 2 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL', path, message: expect.stringMatching(message) });
      // Only the scripted server's side may have grown: its accepted socket and its eventfds.
      const made = 1 + steps.filter((s) => s === 'mid-fd' || (typeof s === 'object' && s.fd === 'eventfd')).length;
      expect(openFdCount()).toBeLessThanOrEqual(before + made);
    });
  }

  it('gives up on a silent server after the timeout', async () => {
    const path = scripted([]);
    await expect(connect(path, { timeout: 200 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_TIMEOUT', path });
  });

  it('stops when aborted', async () => {
    const path = scripted([{ value: 0 }]);
    const controller = new AbortController();
    const pending = connect(path, { signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });
});
