import { abortError, fail, ivshmemError, IvshmemError, throwIfAborted } from '../errors.js';
import { native } from '../native.js';
import { checkSealedMemoryPolicy, ClientHandshake, isPeerId, isVectorCount, MAX_VECTORS, MessageSocket, type SealedMemoryPolicy } from '../protocol/index.js';
import { DeviceBase } from './base.js';

/** Options of {@link connect}. */
export interface ConnectOptions {
  /**
   * The number of vectors the server gives each peer. When given, setup completes exactly after
   * that many of our own eventfds; otherwise 20 ms after the last of them.
   */
  vectors?: number;
  /** Milliseconds after which a server that has not finished the setup is given up on: an integer 1..2^31-1 (default 10 s). */
  timeout?: number;
  /** Aborts connecting. */
  signal?: AbortSignal;
  /**
   * What to do with shared memory that is not sealed against shrinking (any peer could truncate
   * it and kill every process that mapped it with SIGBUS): `'require'` (default) refuses it
   * (`ERR_IVSHMEM_UNSEALED_MEMORY`), `'warn'` maps it and emits a process warning
   * (`IVSHMEM_UNSEALED_MEMORY`), `'ignore'` maps it. `'warn'` and `'ignore'` do not protect
   * against a hostile server or peer: use them only among peers you trust. Our server seals its
   * memory unless given a file (`shm`, `-M`/`-m`); QEMU's contrib server does not.
   */
  sealedMemory?: SealedMemoryPolicy;
}

/** Another peer on the same server, as this peer knows it. */
export interface RemotePeer {
  /** Its ivshmem peer ID. */
  id: number;
  /** How many of its vectors we can ring. */
  vectors: number;
}

/**
 * A host-side peer of an ivshmem-server (ours or QEMU's): the shared memory, this peer's ID and
 * eventfds, and the other peers' doorbells, kept up to date from the server's messages.
 */
export class ServerPeerDevice extends DeviceBase {
  /** Always `'server-peer'`. */
  readonly backend = 'server-peer' as const;
  /** The server's socket. */
  readonly socketPath: string;
  #socket: MessageSocket;
  #peers: Map<number, number[]>;
  #fresh = new Set<number>();
  #brokenDoorbells = new Set<number>();
  #own: number[];

  /** @internal */
  constructor(init: { id: number; memory: ArrayBuffer; own: number[]; peers: Map<number, number[]>; socket: MessageSocket }) {
    super({ id: init.id, memory: init.memory, interruptFds: init.own });
    this.socketPath = init.socket.path;
    this.#socket = init.socket;
    this.#peers = init.peers;
    this.#own = init.own;
  }

  /** The other peers connected to the server, by ascending ID. */
  get peers(): RemotePeer[] {
    return [...this.#peers].filter(([id]) => id !== this.id).sort((a, b) => a[0] - b[0]).map(([id, fds]) => ({ id, vectors: fds.length }));
  }

  /** Whether the server still holds our connection. */
  get connected(): boolean {
    return !this.#socket.closed;
  }

  protected doorbell(peer: number, vector: number): void {
    const fd = peer === this.id ? this.#own[vector] : this.#peers.get(peer)?.[vector];
    // A doorbell to a missing peer or vector is dropped, as QEMU's device drops it.
    if (fd === undefined) return;
    try {
      // false: the counter (or a pipe a server handed over) is full; the peer has a wake-up
      // pending anyway.
      native.eventfdSignal(fd, 1, this.socketPath);
    } catch (error) {
      // EPIPE, EBADF, EINVAL: the server handed over something that is not a working eventfd.
      // That doorbell is dropped, as QEMU drops one it cannot write; the connection and every
      // other peer's doorbells stay. Said once per peer.
      if (this.#brokenDoorbells.has(peer)) return;
      this.#brokenDoorbells.add(peer);
      process.emitWarning(`doorbell of peer ${peer} (vector ${vector}) from '${this.socketPath}' cannot be rung: ${(error as Error).message}; doorbells to it are dropped`, {
        code: 'IVSHMEM_DOORBELL_FAILED',
      });
    }
  }

  protected release(): void {
    this.#socket.close();
    for (const fds of this.#peers.values()) for (const fd of fds) native.close(fd);
    this.#peers.clear();
  }

  /** @internal Called by the connection for each message after setup (`raw`: as sent). */
  handle(value: number, fd: number, raw?: bigint): void {
    const text = String(raw ?? value);
    if (fd >= 0) {
      if (value === this.id) return this.protocolError(`an extra eventfd for our own ID ${value} after setup`, fd);
      if (!isPeerId(value)) return this.protocolError(`peer ID ${text} out of range 0..65535`, fd);
      let fds = this.#peers.get(value);
      if (!fds) {
        fds = [];
        this.#peers.set(value, fds);
        this.#fresh.add(value);
        // The server sends a newcomer's vectors in one burst: announce it once they are in.
        setImmediate(() => this.#announce(value));
      }
      native.setNonBlocking(fd);
      fds.push(fd);
      return;
    }
    if (!isPeerId(value) || value === this.id) return this.protocolError(`a disconnect for ID ${text}`, -1);
    const fds = this.#peers.get(value);
    if (!fds) return;
    for (const f of fds) native.close(f);
    this.#peers.delete(value);
    this.#brokenDoorbells.delete(value);
    if (this.#fresh.delete(value)) return;
    this.emit('peer-disconnected', value);
  }

  /** @internal The server connection ended after setup. */
  ended(error?: IvshmemError): void {
    if (this.closed) return;
    this.emit('disconnect', error);
  }

  private protocolError(why: string, fd: number): void {
    if (fd >= 0) native.close(fd);
    const error = ivshmemError('ERR_IVSHMEM_PROTOCOL', `ivshmem protocol error from '${this.socketPath}': ${why}`, { path: this.socketPath });
    this.#socket.close();
    this.emit('disconnect', error);
  }

  #announce(id: number): void {
    if (this.#fresh.delete(id) && this.#peers.has(id)) this.emit('peer-connected', id);
  }
}

const QUIET_MS = 20;
// The longest delay setTimeout() keeps (a longer one fires at once).
const MAX_TIMER = 2 ** 31 - 1;

/**
 * Connects to an ivshmem-server as a host-side peer.
 *
 * @example
 * ```ts
 * const dev = await connect('/tmp/ivshmem.sock');
 * dev.on('interrupt', (vector) => console.log('rung on', vector));
 * dev.on('peer-connected', (id) => dev.ring(id, 0));
 * ```
 */
export async function connect(socketPath: string, options: ConnectOptions = {}): Promise<ServerPeerDevice> {
  if (typeof socketPath !== 'string' || socketPath === '') fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'connect(): socketPath must be a non-empty string');
  const { vectors, timeout = 10_000, signal } = options;
  const sealedMemory = checkSealedMemoryPolicy(options.sealedMemory, 'connect()');
  if (vectors !== undefined && !isVectorCount(vectors)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `connect(): vectors must be an integer 1..${MAX_VECTORS}, got ${String(vectors)}`);
  }
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1 || timeout > MAX_TIMER) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `connect(): timeout must be an integer number of milliseconds 1..${MAX_TIMER}, got ${String(timeout)}`);
  }
  throwIfAborted(signal);
  const fd = native.socketConnect(socketPath);

  return new Promise<ServerPeerDevice>((resolve, reject) => {
    const handshake = new ClientHandshake(socketPath, vectors, sealedMemory);
    let device: ServerPeerDevice | null = null;
    let settled = false;
    let quietCheck: NodeJS.Timeout | null = null;

    const stop = (): void => {
      settled = true;
      clearTimeout(timer);
      if (quietCheck) clearTimeout(quietCheck);
      signal?.removeEventListener('abort', aborted);
    };
    const failSetup = (error: unknown): void => {
      if (settled) return;
      stop();
      socket.close();
      handshake.dispose();
      reject(error);
    };
    const finish = (): void => {
      const setup = settled ? null : handshake.finish();
      if (!setup) return;
      stop();
      device = new ServerPeerDevice({ ...setup, socket });
      resolve(device);
    };

    const socket = new MessageSocket(fd, socketPath, {
      message(value, msgFd, raw) {
        if (device) return device.handle(value, msgFd, raw);
        if (settled) {
          if (msgFd >= 0) native.close(msgFd);
          return;
        }
        let step;
        try {
          step = handshake.receive(value, msgFd, raw);
        } catch (error) {
          return failSetup(error);
        }
        if (step === 'done') return finish();
        if (step === 'past') {
          finish();
          return device!.handle(value, msgFd, raw);
        }
        if (step === 'settle') {
          // Our own fds come last, in one burst that may reach us in pieces: done once none
          // has come for a moment. Passing `vectors` makes this exact and instant.
          if (quietCheck) clearTimeout(quietCheck);
          quietCheck = setTimeout(() => {
            quietCheck = null;
            finish();
          }, QUIET_MS);
        }
      },
      end(error) {
        if (device) return device.ended(error);
        failSetup(error ?? handshake.hungUp());
      },
    });

    const timer = setTimeout(
      () => failSetup(ivshmemError('ERR_IVSHMEM_TIMEOUT', `the server at '${socketPath}' did not finish the setup within ${timeout} ms`, { path: socketPath })),
      timeout,
    );
    const aborted = (): void => failSetup(abortError(signal!.reason));
    signal?.addEventListener('abort', aborted, { once: true });
    socket.start();
  });
}
