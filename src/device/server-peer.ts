import { fail, ivshmemError, IvshmemError } from '../errors.js';
import { native } from '../native.js';
import { MessageSocket } from '../server/message-socket.js';
import { DeviceBase } from './base.js';

/** Options of {@link connect}. */
export interface ConnectOptions {
  /**
   * The number of vectors the server gives each peer. When given, setup completes exactly after
   * that many of our own eventfds; otherwise 20 ms after the last of them.
   */
  vectors?: number;
  /** Gives up on a server that does not finish the setup in time (default 10 s). */
  timeout?: number;
  /** Aborts connecting. */
  signal?: AbortSignal;
}

/** Another peer on the same server, as this peer knows it. */
export interface RemotePeer {
  id: number;
  /** How many of its vectors we can ring. */
  vectors: number;
}

/**
 * A host-side peer of an ivshmem-server (ours or QEMU's): the shared memory, this peer's ID and
 * eventfds, and the other peers' doorbells, kept up to date from the server's messages.
 */
export class ServerPeerDevice extends DeviceBase {
  readonly backend = 'server-peer' as const;
  /** The server's socket. */
  readonly socketPath: string;
  #socket: MessageSocket;
  #peers: Map<number, number[]>;
  #fresh = new Set<number>();
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
    if (fd !== undefined) native.eventfdSignal(fd, 1, this.socketPath);
  }

  protected release(): void {
    this.#socket.close();
    for (const fds of this.#peers.values()) for (const fd of fds) native.close(fd);
    this.#peers.clear();
  }

  /** @internal Called by the connection for each message after setup. */
  handle(value: number, fd: number): void {
    if (fd >= 0) {
      if (value === this.id) return this.protocolError(`an extra eventfd for our own ID ${value} after setup`, fd);
      if (!isPeerId(value)) return this.protocolError(`peer ID ${value} out of range 0..65535`, fd);
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
    if (!isPeerId(value) || value === this.id) return this.protocolError(`a disconnect for ID ${value}`, -1);
    const fds = this.#peers.get(value);
    if (!fds) return;
    for (const f of fds) native.close(f);
    this.#peers.delete(value);
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

function isPeerId(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffff;
}

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
  if (vectors !== undefined && (!Number.isInteger(vectors) || vectors < 1 || vectors > 64)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `connect(): vectors must be an integer 1..64, got ${String(vectors)}`);
  }
  signal?.throwIfAborted();
  const fd = native.socketConnect(socketPath);

  return new Promise<ServerPeerDevice>((resolve, reject) => {
    let stage: 'version' | 'id' | 'shm' | 'peers' | 'ready' = 'version';
    let id = -1;
    let memory: ArrayBuffer | null = null;
    const own: number[] = [];
    const peers = new Map<number, number[]>();
    let device: ServerPeerDevice | null = null;
    let quietCheck: NodeJS.Timeout | null = null;

    const failSetup = (error: IvshmemError | Error, fdToClose = -1): void => {
      if (fdToClose >= 0) native.close(fdToClose);
      if (stage === 'ready') return;
      stage = 'ready';
      clearTimeout(timer);
      if (quietCheck) clearTimeout(quietCheck);
      signal?.removeEventListener('abort', aborted);
      socket.close();
      for (const f of own) native.close(f);
      for (const fds of peers.values()) for (const f of fds) native.close(f);
      if (memory) native.unmap(memory);
      reject(error);
    };
    const violation = (why: string, fdToClose: number): void =>
      failSetup(ivshmemError('ERR_IVSHMEM_PROTOCOL', `ivshmem protocol error from '${socketPath}': ${why}`, { path: socketPath }), fdToClose);

    const finish = (): void => {
      if (stage !== 'peers') return;
      stage = 'ready';
      clearTimeout(timer);
      signal?.removeEventListener('abort', aborted);
      device = new ServerPeerDevice({ id, memory: memory!, own, peers, socket });
      resolve(device);
    };

    const socket = new MessageSocket(fd, socketPath, {
      message(value, msgFd) {
        if (device) return device.handle(value, msgFd);
        switch (stage) {
          case 'version':
            if (msgFd >= 0 || value !== 0) return violation(`unsupported protocol version ${value} (expected 0)`, msgFd);
            stage = 'id';
            return;
          case 'id':
            if (msgFd >= 0 || !isPeerId(value)) return violation(`bad peer ID ${value}`, msgFd);
            id = value;
            stage = 'shm';
            return;
          case 'shm': {
            if (value !== -1 || msgFd < 0) return violation(`expected the shared-memory fd (-1 with an fd), got ${value}${msgFd < 0 ? ' without an fd' : ''}`, msgFd);
            try {
              const size = native.fstat(msgFd, socketPath).size;
              if (size <= 0) return violation('the shared memory is empty', msgFd);
              memory = native.map(msgFd, 0, size, true, socketPath);
            } catch (error) {
              return failSetup(error as IvshmemError, msgFd);
            }
            native.close(msgFd);
            stage = 'peers';
            return;
          }
          case 'peers': {
            if (msgFd < 0) {
              // A peer left while we were being set up.
              if (!isPeerId(value) || value === id) return violation(`a disconnect for ID ${value} during setup`, -1);
              for (const f of peers.get(value) ?? []) native.close(f);
              peers.delete(value);
              return;
            }
            if (!isPeerId(value)) return violation(`peer ID ${value} out of range 0..65535`, msgFd);
            if (value === id) {
              native.setNonBlocking(msgFd);
              own.push(msgFd);
              if (own.length > 64) return violation('more than 64 vectors', -1);
              if (vectors !== undefined && own.length === vectors) return finish();
              if (vectors === undefined) {
                // Our own fds come last, in one burst that may reach us in pieces: done once
                // none has come for a moment. Passing `vectors` makes this exact and instant.
                if (quietCheck) clearTimeout(quietCheck);
                quietCheck = setTimeout(() => {
                  quietCheck = null;
                  finish();
                }, QUIET_MS);
              }
              return;
            }
            if (own.length > 0) return violation(`peer ${value}'s eventfd after our own`, msgFd);
            let fds = peers.get(value);
            if (!fds) peers.set(value, (fds = []));
            fds.push(msgFd);
            return;
          }
        }
      },
      end(error) {
        if (device) return device.ended(error);
        failSetup(
          error ??
            ivshmemError('ERR_IVSHMEM_PROTOCOL', `the server at '${socketPath}' closed the connection during setup (stage: ${stage})`, { path: socketPath }),
        );
      },
    });

    const timer = setTimeout(
      () => failSetup(ivshmemError('ERR_IVSHMEM_TIMEOUT', `the server at '${socketPath}' did not finish the setup within ${timeout} ms`, { path: socketPath })),
      timeout,
    );
    const aborted = (): void => failSetup(signal!.reason as Error);
    signal?.addEventListener('abort', aborted, { once: true });
    socket.start();
  });
}
