import { ivshmemError, type IvshmemError } from '../errors.js';
import { mapRegion } from '../mapping.js';
import { native } from '../native.js';
import { isPeerId, MAX_VECTORS, PROTOCOL_VERSION } from './limits.js';
import { checkServerMemory, type SealedMemoryPolicy } from './memory-seals.js';
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
 * moment; or to call it now; or (`'past'`) to call it now and hand this very message, which is
 * about another peer and came after our own vectors, to the finished device: such messages are
 * the protocol's normal traffic (a peer joining or leaving just after us), not part of the setup.
 * With `'past'` the handshake did not take the message's fd.
 */
export type HandshakeStep = 'more' | 'settle' | 'done' | 'past';

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
  readonly #sealedMemory: SealedMemoryPolicy;

  /**
   * `vectors`: when known, setup ends exactly after that many of our own eventfds.
   * `sealedMemory`: what to do with memory that is not sealed (see {@link SealedMemoryPolicy}).
   */
  constructor(socketPath: string, vectors?: number, sealedMemory: SealedMemoryPolicy = 'require') {
    this.#path = socketPath;
    this.#vectors = vectors;
    this.#sealedMemory = sealedMemory;
  }

  get stage(): HandshakeStage {
    return this.#stage;
  }

  /**
   * Takes one message (and owns its fd from here on, also when it throws, except after
   * `'past'`). `raw`: the integer as sent, named in errors when `value` is out of range (NaN).
   */
  receive(value: number, fd: number, raw?: bigint): HandshakeStep {
    try {
      return this.#receive(value, fd, raw === undefined ? String(value) : String(raw));
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

  // `text`: the value as sent, for messages.
  #receive(value: number, fd: number, text: string): HandshakeStep {
    switch (this.#stage) {
      case 'version':
        if (value !== PROTOCOL_VERSION) this.#violation(`unsupported protocol version ${text} (expected ${PROTOCOL_VERSION})`);
        if (fd >= 0) this.#violation('the version message came with an fd (it carries none)');
        this.#stage = 'id';
        return 'more';
      case 'id':
        if (!isPeerId(value)) this.#violation(`bad peer ID ${text}`);
        if (fd >= 0) this.#violation(`the ID message (${text}) came with an fd (it carries none)`);
        this.#id = value;
        this.#stage = 'shm';
        return 'more';
      case 'shm': {
        if (value !== SHM_MESSAGE || fd < 0) this.#violation(`expected the shared-memory fd (-1 with an fd), got ${text}${fd < 0 ? ' without an fd' : ''}`);
        // Seals and size are checked before mapping: memory another peer can shrink is SIGBUS.
        const size = checkServerMemory(fd, this.#path, this.#sealedMemory);
        this.#memory = mapRegion(fd, 0, size, true, this.#path);
        native.close(fd);
        this.#stage = 'peers';
        return 'more';
      }
      case 'peers':
        return this.#peer(value, fd, text);
      case 'ready':
        this.#violation('a message after the setup ended');
    }
  }

  #peer(value: number, fd: number, text: string): HandshakeStep {
    if (value !== this.#id && this.#own.length > 0) {
      // Our own vectors come last and together: a message about another peer after them is
      // traffic after the setup (unless fewer of ours came than we were told to expect).
      if (this.#vectors !== undefined && this.#own.length < this.#vectors) {
        this.#violation(`only ${this.#own.length} of our own ${this.#vectors} eventfds came before a message about peer ${text}`);
      }
      return 'past';
    }
    if (fd < 0) {
      // A peer left while we were being set up.
      if (!isPeerId(value) || value === this.#id) this.#violation(`a disconnect for ID ${text} during setup`);
      for (const f of this.#peers.get(value) ?? []) native.close(f);
      this.#peers.delete(value);
      return 'more';
    }
    if (!isPeerId(value)) this.#violation(`peer ID ${text} out of range 0..65535`);
    if (value === this.#id) {
      native.setNonBlocking(fd);
      this.#own.push(fd);
      if (this.#own.length > MAX_VECTORS) this.#violation(`more than ${MAX_VECTORS} vectors`);
      if (this.#vectors === undefined) return 'settle';
      return this.#own.length === this.#vectors ? 'done' : 'more';
    }
    // Doorbells are written from the event loop: a blocking one (a full pipe from a hostile
    // server) would stall it for good.
    native.setNonBlocking(fd);
    let fds = this.#peers.get(value);
    if (!fds) this.#peers.set(value, (fds = []));
    fds.push(fd);
    return 'more';
  }
}
