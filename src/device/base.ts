import { EventEmitter } from 'node:events';
import { abortError, fail, ivshmemError, IvshmemError, throwIfAborted, type ErrnoCode } from '../errors.js';
import { native, type NativeWatcher } from '../native.js';
import type { Backend, Device, DeviceEvents, Interrupt, InterruptOptions } from './types.js';

interface Vector {
  fd: number;
  watcher: NativeWatcher | null;
  watching: boolean;
  /** Set once polling the fd failed: waits on this vector reject with it. */
  failure: IvshmemError | null;
  waiters: Set<(count: number, error?: Error) => void>;
}

/** What a backend hands to {@link DeviceBase}. */
export interface DeviceInit {
  id: number;
  memory: ArrayBuffer;
  /** One eventfd per vector, signalled when this peer is rung; owned by the device from now on. */
  interruptFds: number[];
  /** Number of vectors peers can be rung on (defaults to interruptFds.length). */
  vectors?: number;
  /** How `memory` is unmapped on close (default: the addon's unmap); backends with injected system calls pass theirs. */
  unmap?: (memory: ArrayBuffer) => void;
}

/**
 * What every backend shares: interrupt delivery from eventfds, waiting and iteration, argument
 * checks on ring(), and an idempotent close(). Interrupt fds are watched only while someone
 * listens, so an idle device never keeps the process alive.
 */
export abstract class DeviceBase extends EventEmitter<DeviceEvents> implements Device {
  abstract readonly backend: Backend;
  readonly id: number;
  readonly size: number;
  readonly vectors: number;
  #memory: ArrayBuffer;
  readonly #unmap: (memory: ArrayBuffer) => void;
  #closed = false;
  #sources: Vector[];
  #iterators = 0;
  #closeWaiters = new Set<() => void>();
  // Doorbells a blocking thread took (takeInterrupts) for this thread's listeners, per vector,
  // delivered together on the next event-loop turn.
  #taken = new Map<number, number>();

  protected constructor(init: DeviceInit) {
    super();
    this.id = init.id;
    this.#memory = init.memory;
    this.#unmap = init.unmap ?? native.unmap;
    this.size = init.memory.byteLength;
    this.vectors = init.vectors ?? init.interruptFds.length;
    this.#sources = init.interruptFds.map((fd) => ({ fd, watcher: null, watching: false, failure: null, waiters: new Set() }));
    // newListener fires before the listener is added: look again once it is.
    const plain = this as EventEmitter;
    plain.on('newListener', (event: string) => event === 'interrupt' && queueMicrotask(() => this.#update()));
    plain.on('removeListener', (event: string) => event === 'interrupt' && this.#update());
  }

  get memory(): ArrayBuffer {
    return this.#memory;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get receivesInterrupts(): boolean {
    return this.#sources.length > 0;
  }

  ring(peer: number, vector = 0): void {
    this.assertOpen();
    if (this.vectors === 0) this.noDoorbell();
    if (!Number.isInteger(peer) || peer < 0 || peer > 0xffff) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ring(): peer must be an integer 0..65535, got ${String(peer)}`);
    }
    if (!Number.isInteger(vector) || vector < 0 || vector > 255 || vector >= this.vectors) {
      fail(
        'ERR_IVSHMEM_INVALID_ARGUMENT',
        `ring(): vector must be an integer 0..${Math.min(255, this.vectors - 1)} (this device has ${this.vectors} vectors), got ${String(vector)}`,
      );
    }
    this.doorbell(peer, vector);
  }

  interruptFd(vector = 0): number {
    this.assertOpen();
    if (this.#sources.length === 0) return -1;
    return this.#source(vector).fd;
  }

  takeInterrupts(vector = 0): number {
    this.assertOpen();
    if (this.#sources.length === 0) this.noInterrupts();
    const source = this.#source(vector);
    const count = native.eventfdDrain(source.fd);
    if (count === 0 || (source.waiters.size === 0 && this.listenerCount('interrupt') === 0)) return count;
    // The thread is blocked now; its listeners run once it returns to the event loop. One
    // delivery per turn, however many drains: a blocking loop runs no immediates meanwhile.
    if (this.#taken.size === 0) setImmediate(() => this.#deliverTaken());
    this.#taken.set(vector, (this.#taken.get(vector) ?? 0) + count);
    return count;
  }

  #deliverTaken(): void {
    const taken = [...this.#taken];
    this.#taken.clear();
    for (const [vector, count] of taken) if (!this.#closed) this.#deliver(vector, count);
  }

  waitInterrupt(vector = 0, options: { signal?: AbortSignal } = {}): Promise<number> {
    let source: Vector;
    try {
      source = this.#source(vector);
    } catch (error) {
      return Promise.reject(error);
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal.reason));
    if (source.failure) return Promise.reject(source.failure);
    return new Promise<number>((resolve, reject) => {
      const done = (count: number, error?: Error): void => {
        source.waiters.delete(done);
        this.#closeWaiters.delete(closed);
        signal?.removeEventListener('abort', aborted);
        this.#update();
        if (error) reject(error);
        else if (count < 0) reject(this.#closedError());
        else resolve(count);
      };
      const closed = (): void => done(-1);
      const aborted = (): void => {
        source.waiters.delete(done);
        this.#closeWaiters.delete(closed);
        this.#update();
        reject(abortError(signal!.reason));
      };
      source.waiters.add(done);
      this.#closeWaiters.add(closed);
      signal?.addEventListener('abort', aborted, { once: true });
      this.#update();
    });
  }

  async *interrupts(options: InterruptOptions = {}): AsyncIterableIterator<Interrupt> {
    const { vector, signal } = options;
    if (vector !== undefined) this.#source(vector);
    else if (this.vectors === 0 || this.#sources.length === 0) this.noInterrupts();
    const queue: Interrupt[] = [];
    let wake: (() => void) | null = null;
    const onInterrupt = (v: number, count: number): void => {
      if (vector !== undefined && v !== vector) return;
      queue.push({ vector: v, count });
      wake?.();
    };
    const onEnd = (): void => wake?.();
    this.on('interrupt', onInterrupt);
    this.on('close', onEnd);
    signal?.addEventListener('abort', onEnd);
    try {
      for (;;) {
        throwIfAborted(signal);
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.#closed) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      this.off('interrupt', onInterrupt);
      this.off('close', onEnd);
      signal?.removeEventListener('abort', onEnd);
    }
  }

  /** {@link Device.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const source of this.#sources) {
      source.watcher?.close();
      source.watcher = null;
      native.close(source.fd);
    }
    for (const closed of [...this.#closeWaiters]) closed();
    // The memory has one owner, this class, and goes first: a backend's release() may need
    // every mapping gone (vfio-pci's unbind waits for them).
    try {
      this.#unmap(this.#memory);
    } finally {
      try {
        this.release();
      } finally {
        this.emit('close');
      }
    }
  }

  /** Writes the doorbell; arguments are already checked. */
  protected abstract doorbell(peer: number, vector: number): void;

  /** Releases the backend's own fds and mappings (not `memory` nor interrupt fds: this class owns those, and has let them go before). */
  protected abstract release(): void;

  protected noDoorbell(): never {
    fail('ERR_IVSHMEM_NO_DOORBELL', `This ${this.backend} device has no doorbell.`);
  }

  protected noInterrupts(): never {
    fail('ERR_IVSHMEM_NO_INTERRUPTS', `This ${this.backend} device delivers no interrupts.`);
  }

  protected assertOpen(): void {
    if (this.#closed) throw this.#closedError();
  }

  #closedError(): IvshmemError {
    return ivshmemError('ERR_IVSHMEM_CLOSED', `The ${this.backend} device is closed.`);
  }

  #source(vector: number): Vector {
    this.assertOpen();
    if (this.#sources.length === 0) this.noInterrupts();
    const source = Number.isInteger(vector) ? this.#sources[vector] : undefined;
    if (!source) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `vector must be an integer 0..${this.#sources.length - 1}, got ${String(vector)}`);
    }
    return source;
  }

  // Watches exactly the vectors somebody waits on or listens to. A doorbell that comes while
  // nobody does stays in its eventfd, for the next wait. Watchers are made once and then only
  // started and stopped: a channel waits once per wake-up.
  #update(): void {
    if (this.#closed) return;
    const everyVector = this.listenerCount('interrupt') > 0;
    this.#sources.forEach((source, vector) => {
      const wanted = (everyVector || source.waiters.size > 0) && !source.failure;
      if (wanted === source.watching) return;
      source.watcher ??= new native.Watcher(source.fd, (error) => this.#onReadable(vector, error));
      if (wanted) source.watcher.start(native.READABLE);
      else source.watcher.stop();
      source.watching = wanted;
    });
  }

  #onReadable(vector: number, error: ErrnoCode | null): void {
    const source = this.#sources[vector]!;
    if (error) {
      // libuv has stopped the handle: fail this vector's waits rather than leave them hanging.
      const failure = ivshmemError(error, `interrupt vector ${vector} of the ${this.backend} device failed: ${error}`);
      source.failure = failure;
      source.watcher?.close();
      source.watcher = null;
      source.watching = false;
      for (const done of [...source.waiters]) done(-1, failure);
      if (this.listenerCount('error') > 0) this.emit('error', failure);
      return;
    }
    const count = native.eventfdDrain(source.fd);
    if (count === 0) return;
    this.#deliver(vector, count);
  }

  #deliver(vector: number, count: number): void {
    for (const done of [...this.#sources[vector]!.waiters]) done(count);
    this.emit('interrupt', vector, count);
  }
}
