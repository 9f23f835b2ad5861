// A scripted, possibly misbehaving ivshmem server for one client: what connect() must survive.
import { rmSync } from 'node:fs';
import { native } from '../../src/native.js';
import { shmPath } from '../helpers.js';

/** One message (`fd`: which fd goes with it), or an action. */
export type Step =
  | { value: number | bigint; fd?: 'shm' | 'eventfd' | number; split?: boolean }
  | 'close'
  | 'mid-fd';

/** The fds a scripted server made, for tests that look at them afterwards. */
export interface Script {
  path: string;
  /** The memory fd it hands out with `fd: 'shm'`. */
  shm: number;
  /** Closes everything it opened and removes the socket. */
  close(): void;
}

function int64(value: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt(value), true);
  return b;
}

/**
 * Serves one client with `steps`, writing synchronously (the messages are tiny). `shm` is the
 * memory fd to hand out (default: a 4 KiB memfd sealed as our server seals it).
 */
export function scriptedServer(steps: Step[], options: { shm?: number } = {}): Script {
  const path = shmPath('proto');
  const listener = native.socketListen(path);
  let shm = options.shm;
  if (shm === undefined) {
    shm = native.memfdCreateSealable('proto');
    native.ftruncate(shm, 4096);
    native.addSeals(shm, native.seals.SHRINK | native.seals.GROW | native.seals.SEAL);
  }
  const opened: number[] = [listener, shm];
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
      else if (step.fd === 'eventfd') opened.push((fd = native.eventfdCreate()));
      else if (typeof step.fd === 'number') fd = step.fd;
      if (step.split) {
        for (let i = 0; i < 8; i++) native.socketSend(client, bytes.subarray(i, i + 1), i === 0 ? fd : -1);
      } else {
        native.socketSend(client, bytes, fd);
      }
    }
  };
  watcher.start(native.READABLE);
  return {
    path,
    shm,
    close() {
      watcher.close();
      for (const fd of opened.splice(0)) native.close(fd);
      rmSync(path, { force: true });
    },
  };
}
