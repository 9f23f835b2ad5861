import { ivshmemError, type IvshmemError } from '../errors.js';
import { native } from '../native.js';
import { isPeerId, MAX_VECTORS, PROTOCOL_VERSION } from './limits.js';
import { SHM_MESSAGE } from './messages.js';

/** Where a client's setup stands: what it waits for next. */
export type HandshakeStage = 'version' | 'id' | 'shm' | 'peers' | 'ready';

/** What a finished setup hands over; the receiver owns every fd and the mapping. */
export interface HandshakeResult {
  id: number;
  memory: ArrayBuffer;
  /** Our own eventfds, one per vector, non-blocking. */
  own: number[];
  /** The other peers' eventfds by ID, one per vector. */
  peers: Map<number, number[]>;
}

/**
 * What {@link ClientHandshake.receive} asks of its caller next: more messages; or, when the
 * vector count is not known, to call {@link ClientHandshake.finish} once no message came for a
 * moment; or to call it now.
 */
export type HandshakeStep = 'more' | 'settle' | 'done';

/**
 * The client's half of the setup, as a state machine fed one message at a time; the I/O (socket,
 * timers, abort) stays with the caller. A violation throws a typed error; the caller then calls
 * {@link ClientHandshake.dispose}.
 */
export class ClientHandshake {
  #stage: HandshakeStage = 'version';
  #id = -1;
  #memory: ArrayBuffer | null = null;
  #own: number[] = [];
  #peers = new Map<number, number[]>();
  readonly #path: string;
  readonly #vectors: number | undefined;

  /** `vectors`: when known, setup ends exactly after that many of our own eventfds. */
  constructor(socketPath: string, vectors?: number) {
    this.#path = socketPath;
    this.#vectors = vectors;
  }

  get stage(): HandshakeStage {
    return this.#stage;
  }

  /** Takes one message (and owns its fd from here on, also when it throws). */
  receive(value: number, fd: number): HandshakeStep {
    try {
      return this.#receive(value, fd);
    } catch (error) {
      if (fd >= 0 && !this.#holds(fd)) native.close(fd);
      throw error;
    }
  }

  /** Ends the setup once every vector came; `null` when it cannot end yet. */
  finish(): HandshakeResult | null {
    if (this.#stage !== 'peers') return null;
    this.#stage = 'ready';
    return { id: this.#id, memory: this.#memory!, own: this.#own, peers: this.#peers };
  }

  /** A failed setup: closes every fd and unmaps the memory received so far. */
  dispose(): void {
    if (this.#stage === 'ready') return;
    this.#stage = 'ready';
    for (const f of this.#own) native.close(f);
    for (const fds of this.#peers.values()) for (const f of fds) native.close(f);
    if (this.#memory) native.unmap(this.#memory);
  }

  /** The setup's error for a peer that hung up before it was done. */
  hungUp(): IvshmemError {
    return ivshmemError('ERR_IVSHMEM_PROTOCOL', `the server at '${this.#path}' closed the connection during setup (stage: ${this.#stage})`, {
      path: this.#path,
    });
  }

  #holds(fd: number): boolean {
    return this.#own.includes(fd);
  }

  #violation(why: string): never {
    throw ivshmemError('ERR_IVSHMEM_PROTOCOL', `ivshmem protocol error from '${this.#path}': ${why}`, { path: this.#path });
  }

  #receive(value: number, fd: number): HandshakeStep {
    switch (this.#stage) {
      case 'version':
        if (fd >= 0 || value !== PROTOCOL_VERSION) this.#violation(`unsupported protocol version ${value} (expected ${PROTOCOL_VERSION})`);
        this.#stage = 'id';
        return 'more';
      case 'id':
        if (fd >= 0 || !isPeerId(value)) this.#violation(`bad peer ID ${value}`);
        this.#id = value;
        this.#stage = 'shm';
        return 'more';
      case 'shm': {
        if (value !== SHM_MESSAGE || fd < 0) this.#violation(`expected the shared-memory fd (-1 with an fd), got ${value}${fd < 0 ? ' without an fd' : ''}`);
        const size = native.fstat(fd, this.#path).size;
        if (size <= 0) this.#violation('the shared memory is empty');
        this.#memory = native.map(fd, 0, size, true, this.#path);
        native.close(fd);
        this.#stage = 'peers';
        return 'more';
      }
      case 'peers':
        return this.#peer(value, fd);
      case 'ready':
        this.#violation('a message after the setup ended');
    }
  }

  #peer(value: number, fd: number): HandshakeStep {
    if (fd < 0) {
      // A peer left while we were being set up.
      if (!isPeerId(value) || value === this.#id) this.#violation(`a disconnect for ID ${value} during setup`);
      for (const f of this.#peers.get(value) ?? []) native.close(f);
      this.#peers.delete(value);
      return 'more';
    }
    if (!isPeerId(value)) this.#violation(`peer ID ${value} out of range 0..65535`);
    if (value === this.#id) {
      native.setNonBlocking(fd);
      this.#own.push(fd);
      if (this.#own.length > MAX_VECTORS) this.#violation(`more than ${MAX_VECTORS} vectors`);
      if (this.#vectors === undefined) return 'settle';
      return this.#own.length === this.#vectors ? 'done' : 'more';
    }
    if (this.#own.length > 0) this.#violation(`peer ${value}'s eventfd after our own`);
    let fds = this.#peers.get(value);
    if (!fds) this.#peers.set(value, (fds = []));
    fds.push(fd);
    return 'more';
  }
}
