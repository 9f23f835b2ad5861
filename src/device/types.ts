import type { EventEmitter } from 'node:events';

/** Where a {@link Device} gets its memory and doorbells from. */
export type Backend = 'file' | 'server-peer' | 'vfio' | 'sysfs';

/** One interrupt: `count` doorbells on `vector` arrived since the last event. */
export interface Interrupt {
  /** The vector that was rung. */
  vector: number;
  /** How many doorbells arrived since the last report. */
  count: number;
}

/** Options of {@link Device.interrupts} and {@link Device.waitInterrupt}. */
export interface InterruptOptions {
  /** Only this vector (default: every vector). */
  vector?: number;
  /** Ends the wait or the iteration with the signal's reason. */
  signal?: AbortSignal;
}

/** Events a {@link Device} emits. */
export interface DeviceEvents {
  /** Doorbells arrived on `vector`; listening starts delivery, removing the last listener stops it. */
  interrupt: [vector: number, count: number];
  /** The device was closed. */
  close: [];
  /** server-peer only: a peer connected to the server (its doorbells can be rung now). */
  'peer-connected': [id: number];
  /** server-peer only: a peer left the server. */
  'peer-disconnected': [id: number];
  /**
   * server-peer only: the server connection ended (with the protocol or socket error, if any).
   * Memory and doorbells keep working; no more peer events arrive.
   */
  disconnect: [error?: Error];
  /** Watching an interrupt fd failed (rare: the fd was closed behind the device's back). */
  error: [error: Error];
}

/**
 * An ivshmem device: a shared-memory region, this peer's ID, and doorbells to other peers.
 * Every backend (guest VFIO or sysfs, host server peer, plain file) has this shape.
 */
export interface Device extends EventEmitter<DeviceEvents> {
  /** Which backend this is. */
  readonly backend: Backend;
  /** This peer's ID (IVPosition): 0..65535; 0 on devices without doorbells. */
  readonly id: number;
  /** Size of the shared memory in bytes. */
  readonly size: number;
  /** The shared memory. Zero-length once the device is closed. */
  readonly memory: ArrayBuffer;
  /** How many interrupt vectors this peer has (0 when it has no doorbell). */
  readonly vectors: number;
  /**
   * Whether doorbells rung on this peer arrive as interrupts here. False for file devices and
   * for sysfs guests, which can ring others but not be woken.
   */
  readonly receivesInterrupts: boolean;
  /** True once {@link Device.close} was called. */
  readonly closed: boolean;
  /**
   * Rings peer `peer`'s doorbell on `vector`. Throws on a device without doorbells or an
   * out-of-range argument; a doorbell to a peer that is not there is dropped silently, as
   * the hardware does.
   */
  ring(peer: number, vector?: number): void;
  /**
   * The eventfd that becomes readable when this peer is rung on `vector` (default 0), for a
   * thread that sleeps in the kernel itself instead of in the event loop (the channels'
   * `receiveSync`); -1 on a device that delivers no interrupts (file, sysfs). The device owns
   * it: never close it, and take what it counts with {@link Device.takeInterrupts}, not
   * read(2): a doorbell on a vector is for every end waiting on it in this thread, and a read
   * takes it from this device's `waitInterrupt()` waiters and `'interrupt'` listeners (an
   * asynchronous channel end parked on the same vector would sleep on).
   * Throws `ERR_IVSHMEM_CLOSED` once the device is closed (the number may be reused by then).
   */
  interruptFd(vector?: number): number;
  /**
   * Drains `vector`'s eventfd (see {@link Device.interruptFd}) for a thread that slept on it
   * itself, and returns the count of doorbells (0: none). They still reach this device's
   * `waitInterrupt()` waiters and `'interrupt'` listeners in this thread, on the next
   * event-loop turn (all drains until then as one delivery per vector). Throws
   * `ERR_IVSHMEM_CLOSED` once closed, `ERR_IVSHMEM_NO_INTERRUPTS` on a device without them.
   */
  takeInterrupts(vector?: number): number;
  /** Resolves with the count of doorbells once one arrives on `vector` (default 0). */
  waitInterrupt(vector?: number, options?: { signal?: AbortSignal }): Promise<number>;
  /** Iterates interrupts as they arrive, until the device closes or the signal aborts. */
  interrupts(options?: InterruptOptions): AsyncIterableIterator<Interrupt>;
  /** Releases every fd and mapping. Idempotent. */
  close(): void;
  /** {@link Device.close}, for `using dev = openFile(...)`. */
  [Symbol.dispose](): void;
}
