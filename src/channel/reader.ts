import { bytesCodec, type Codec } from './codec.js';
import { ChannelError, corrupt } from './errors.js';
import {
  RECORD_TYPE_MAX,
  RECORD_TYPE_PADDING,
  W_CONSUMER_WAIT,
  W_DATA,
  W_HEAD_HI,
  W_HEAD_LO,
  W_PRODUCER_WAIT,
  W_READER_CLOSED,
  W_TAIL_LO,
  W_WRITER_CLOSED,
} from './layout.js';
import { whenFormatted, type ChannelOptions, type OpenOptions } from './header.js';
import { BlockingEnd, timedOut, type BlockingOptions } from './blocking.js';
import { FALSE, RESOLVED, TRUE } from './ring.js';

const TWO32 = 2 ** 32;
const DONE: Promise<IteratorResult<never>> = Promise.resolve({ value: undefined, done: true });

/**
 * Receives the payload of one record without allocating: `bytes` is a Node `Buffer` over the
 * ring's data area and the payload is `bytes[offset .. offset + length)`. The bytes are shared
 * memory, valid only during the call: copy what you keep.
 */
export type DrainCallback = (bytes: Uint8Array, offset: number, length: number, type: number) => void;

/**
 * The consuming end of a channel: one per ring.
 *
 * `receive()` resolves with the next message and rejects with `ERR_IVSHMEM_CHANNEL_CLOSED` at
 * EOF (the writer closed and every message was received); `for await` ends there instead.
 * `tryReceive()` returns `undefined` when there is nothing to read; {@link ChannelReader.done}
 * tells EOF apart.
 *
 * Everything read from the ring is copied into a local once, checked against the ring's
 * geometry, and only the local is used. A peer breaking the rules fails the channel with a
 * `ChannelError` (`ERR_IVSHMEM_CHANNEL_CORRUPT`, `field` naming what was wrong); nothing
 * outside the ring is ever read.
 *
 * @example
 * ```ts
 * const reader = new ChannelReader(device.memory, { offset: 0, size: 1 << 16, codec: utf8Codec });
 * for await (const text of reader) console.log(text);
 * ```
 */
export class ChannelReader<T = Uint8Array> extends BlockingEnd<T> implements AsyncIterable<T> {
  #headLo: number; // authoritative: only this end writes the head
  #headHi: number;
  #published: number; // head low word as last stored
  #tailLo: number; // last validated tail seen
  #closed = false;
  #finished = false; // reader-closed stored at EOF
  // The writer-closed value seen at EOF, kept: once finished, the ring bytes may be another's.
  #closedWith = 0;
  readonly #bytes: boolean;
  readonly #u8: Uint8Array; // the data area as a plain Uint8Array, for the bytes codec
  // The record found by #next(): its length, type and size in the ring.
  #length = 0;
  #type = 0;
  #stride = 0;

  /** Attaches to the ring at `options.offset` (formatting it first with `format: true`). */
  constructor(memory: ArrayBuffer, options: ChannelOptions<T> = {}) {
    super(memory, options, W_CONSUMER_WAIT, W_PRODUCER_WAIT);
    this.#bytes = this.codec === (bytesCodec as unknown as Codec<T>);
    this.#u8 = new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    const u32 = this.u32;
    this.#headLo = u32[W_HEAD_LO]!;
    this.#headHi = u32[W_HEAD_HI]!;
    this.#published = this.#headLo;
    if ((this.#headLo & 7) !== 0) throw corrupt('head', `head ${this.#headLo} is not a multiple of 8`);
    const tail = Atomics.load(u32, W_TAIL_LO);
    if ((tail & 7) !== 0 || ((tail - this.#headLo) >>> 0) > this.capacity) {
      throw corrupt('tail', `tail ${tail} is not a multiple of 8 within ${this.capacity} bytes ahead of head ${this.#headLo}`);
    }
    this.#tailLo = tail;
    if (Atomics.load(u32, W_READER_CLOSED) !== 0) {
      throw new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: the ring was closed by its reader; format it again to reuse it');
    }
  }

  /**
   * Attaches once the other side formatted the ring: where `new ChannelReader()` would fail with
   * `ERR_IVSHMEM_CHANNEL_CORRUPT` (magic) because this end came first, this waits for the magic
   * (up to `timeout` ms, default 10 s, then `ERR_IVSHMEM_TIMEOUT`). Other header problems reject
   * at once. Not for the formatting end: that one uses `format: true`.
   */
  static async open<T = Uint8Array>(memory: ArrayBuffer, options: ChannelOptions<T> & OpenOptions = {}): Promise<ChannelReader<T>> {
    const { signal, timeout, ...channel } = options;
    if (!channel.format) await whenFormatted(memory, channel, { signal, timeout });
    return new ChannelReader<T>(memory, channel);
  }

  /** True at EOF: the writer closed and every message was received. */
  get done(): boolean {
    if (this.error) return false;
    if (this.u32.length === 0) this.checkLive();
    return this.#eof();
  }

  /** Bytes of records (with headers and padding) waiting to be read. */
  get available(): number {
    if (this.error) return 0;
    if (this.u32.length === 0) this.checkLive();
    if (this.#finished) return 0;
    return (this.#refreshTail() - this.#headLo) >>> 0;
  }

  /** The next message, or `undefined` when none is there (see {@link ChannelReader.done}). */
  tryReceive(): T | undefined {
    this.#usable();
    const at = this.#next();
    if (at < 0) return undefined;
    return this.#take(at);
  }

  /** The next message, waiting for one; rejects with `ERR_IVSHMEM_CHANNEL_CLOSED` at EOF. */
  async receive(options?: { signal?: AbortSignal }): Promise<T> {
    this.#usable();
    for (;;) {
      // Found and taken in one synchronous step: concurrent receives never share a record.
      const at = this.#next();
      if (at >= 0) return this.#take(at);
      if (this.#eof()) throw this.#endError();
      this.#flush();
      await this.until(() => this.#next() >= 0 || this.#eof(), options?.signal);
      this.#usable();
    }
  }

  /**
   * The next message, blocking this thread until one is there (run-to-completion): spins on
   * the ring, then sleeps in the kernel on the doorbell's eventfd (or, without one, in short
   * naps; over a SharedArrayBuffer shared by worker threads, in `Atomics.wait`, woken by the
   * other end's every publish), never through the event loop. Throws `ERR_IVSHMEM_CHANNEL_CLOSED` at EOF,
   * `ERR_IVSHMEM_TIMEOUT` when `options.timeout` passed, and the channel's error once it failed.
   * For a worker thread or a process that owns its data path: while it blocks, nothing else in
   * this thread runs (no timers, no I/O, no AbortSignal), so give it a timeout if you must
   * notice a peer that went away. On a bus channel always pass one: the bus notices a dead
   * writer with timers, which cannot run while this blocks (without a timeout it waits forever).
   *
   * @example
   * ```ts
   * for (;;) {
   *   const request = reader.receiveSync({ timeout: 5000, spin: 50 });
   *   writer.sendSync(handle(request));
   * }
   * ```
   */
  receiveSync(options?: BlockingOptions): T {
    if (!this.readySync(options)) throw this.#endError();
    return this.#take(this.#next());
  }

  /**
   * Blocks this thread until a message is there (true) or EOF (false), without consuming
   * anything; as {@link ChannelReader.receiveSync}, which it serves. The loop
   * `while (reader.readySync()) reader.drain(onRecord)` moves batches without allocating.
   * On a bus channel always pass a timeout (see {@link ChannelReader.receiveSync}).
   */
  readySync(options?: BlockingOptions): boolean {
    this.#usable();
    if (options !== undefined) this.blockingOptions(options);
    if (this.#next() >= 0) return true;
    this.#flush();
    const ready = (): boolean => this.#next() >= 0 || this.#eof();
    if (!this.untilSync(ready, W_TAIL_LO, options)) throw timedOut('receive', options?.timeout);
    this.#usable();
    if (this.#next() >= 0) return true;
    if (this.#aborted()) throw this.#endError();
    return false;
  }

  /** Waits until a message is there (true) or EOF (false), without consuming anything. */
  ready(options?: { signal?: AbortSignal }): Promise<boolean> {
    // Not async: a message already there, or one the spin finds, answers with a settled
    // promise (the throughput loop `drain(); await ready()` calls this between bursts).
    try {
      this.#usable();
      let at = this.#next();
      if (at >= 0) return TRUE;
      this.#flush();
      const waiting = this.until(() => (at = this.#next()) >= 0 || this.#eof(), options?.signal);
      if (waiting === RESOLVED) return at >= 0 ? TRUE : this.#aborted() ? Promise.reject(this.#endError()) : FALSE;
      return waiting.then(() => {
        if (at < 0 && this.#aborted()) throw this.#endError();
        return at >= 0;
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Hands every waiting record (up to `max`) to `callback` in order, zero-copy and without
   * allocating, and returns how many it handed over. Space is released to the writer in
   * batches. A record whose callback throws counts as received.
   */
  drain(callback: DrainCallback, max = Infinity): number {
    this.#usable();
    const release = this.capacity >>> 2;
    let count = 0;
    try {
      while (count < max) {
        const at = this.#next();
        if (at < 0) break;
        const length = this.#length;
        const type = this.#type;
        const stride = this.#stride;
        count++;
        try {
          callback(this.data, at + 8, length, type);
        } finally {
          this.#verify(at, length, type);
          this.#advance(stride);
        }
        if (((this.#headLo - this.#published) >>> 0) >= release) this.#flush();
      }
    } finally {
      this.#flush();
    }
    return count;
  }

  /**
   * Iterates messages until EOF. Breaking out of the loop leaves the channel open.
   *
   * A plain iterator rather than an async generator: a generator costs several promises and
   * microtask turns per message, which showed in every woken round trip.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    const iterator: AsyncIterableIterator<T> = {
      next: () => this.#iterate(),
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  #iterate(): Promise<IteratorResult<T>> {
    try {
      this.#usable();
      // Another consumer call may have taken the record that woke us: look again each time.
      const at = this.#next();
      if (at >= 0) return Promise.resolve({ value: this.#take(at), done: false });
      if (this.#eof()) return this.#aborted() ? Promise.reject(this.#endError()) : DONE;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.ready().then(() => this.#iterate());
  }

  /** {@link ChannelReader.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Stops reading: pending receives reject with `ERR_IVSHMEM_CHANNEL_CLOSED` and the writer's
   * sends fail from now on. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.stop(new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: the reader was closed'));
    // Finished at EOF (or detached): reader-closed is stored already and the bytes may hold
    // another ring now, so nothing is written and nobody is rung (SPEC 2.8).
    this.retire(W_READER_CLOSED, true);
  }

  #usable(): void {
    if (this.error) throw this.error;
    if (this.u32.length === 0) this.checkLive();
    if (this.#closed) throw new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: receive after close()');
  }

  // Decodes the record at `at`, checks it was not changed under us, and consumes it.
  #take(at: number): T {
    const length = this.#length;
    const type = this.#type;
    const stride = this.#stride;
    // The bytes codec is built in: one copying slice of a Uint8Array view (a Buffer's slice
    // would be a view, and allocate-then-set costs two allocations).
    let value: T;
    try {
      value = this.#bytes ? (this.#u8.slice(at + 8, at + 8 + length) as T) : this.codec.decode(this.data, at + 8, length, type);
    } catch (error) {
      // Content the codec refuses (the writer's to get right) costs this message, not the
      // channel: consume it, so the next receive moves on, and say what happened.
      this.#verify(at, length, type);
      this.#refreshTail();
      this.#advance(stride);
      this.#flush();
      throw new ChannelError('ERR_IVSHMEM_DECODE', `channel: codec ${this.codec.name ?? ''} could not decode a ${length}-byte record (type ${type}): ${(error as Error)?.message ?? String(error)}`, undefined, error);
    }
    this.#verify(at, length, type);
    // An honest writer never moves the tail back over unread records: if it did while we
    // copied, the copy may be torn, so it is refused before it is handed over.
    this.#refreshTail();
    this.#advance(stride);
    this.#flush();
    return value;
  }

  /**
   * Finds the next record; returns its data index, or -1 when the ring is empty. Padding is
   * skipped (and released with the next record). Every shared word is read once into a local.
   */
  #next(): number {
    // Finished: the bytes may hold another ring by now (SPEC 2.8); nothing of it is ours to read.
    if (this.#finished) return -1;
    const capacity = this.capacity;
    for (;;) {
      let available = (this.#tailLo - this.#headLo) >>> 0;
      if (available === 0) {
        available = (this.#refreshTail() - this.#headLo) >>> 0;
        if (available === 0) {
          // Padding skipped on the way is space the writer may be waiting for: release it now.
          this.#flush();
          return -1;
        }
      }
      const at = this.#headLo & this.mask;
      const w = W_DATA + (at >>> 2);
      const length = this.u32[w]!;
      const type = this.u32[w + 1]!;
      const contiguous = capacity - at;
      if (type === RECORD_TYPE_PADDING) {
        // Every record fits at the start of the data area: padding there is never needed, and
        // a writer that kept publishing it could hold this loop.
        if (at === 0) this.fail(corrupt('padding', 'padding at the start of the data area'));
        if (length !== contiguous - 8) {
          this.fail(corrupt('padding', `padding at ${at} is ${length} bytes; it must reach the end of the data area (${contiguous - 8})`));
        }
        if (contiguous > available) this.fail(corrupt('padding', `padding at ${at} runs ${contiguous - available} bytes past the tail`));
        this.#advance(contiguous);
        continue;
      }
      if (type > RECORD_TYPE_MAX) this.fail(corrupt('type', `record type 0x${type.toString(16)} at ${at} is reserved`));
      if (length > capacity - 8) this.fail(corrupt('length', `record length ${length} at ${at} exceeds the largest payload ${capacity - 8}`));
      const stride = 8 + ((length + 7) & ~7);
      if (stride > contiguous) this.fail(corrupt('length', `record of ${length} bytes at ${at} would wrap past the end of the data area`));
      if (stride > available) this.fail(corrupt('length', `record of ${length} bytes at ${at} runs past the tail (${available} bytes published)`));
      this.#length = length;
      this.#type = type;
      this.#stride = stride;
      return at;
    }
  }

  // The writer cannot rewrite published records; a change means a peer scribbled mid-read.
  #verify(at: number, length: number, type: number): void {
    const w = W_DATA + (at >>> 2);
    if (this.u32[w] !== length || this.u32[w + 1] !== type) {
      this.fail(corrupt('length', `record at ${at} changed while it was being read`));
    }
  }

  #advance(bytes: number): void {
    let lo = this.#headLo + bytes;
    if (lo >= TWO32) {
      lo -= TWO32;
      this.#headHi = (this.#headHi + 1) >>> 0;
    }
    this.#headLo = lo;
  }

  // Release: stores the head (high word first) so the writer may reuse the space, then rings
  // the writer if it announced that it waits for space.
  #flush(): void {
    if (this.#headLo === this.#published) return;
    // Detached (draining a ring whose section may have a new owner): the head stays private.
    if (this.detached) return void (this.#published = this.#headLo);
    const u32 = this.u32;
    if (u32[W_HEAD_HI] !== this.#headHi) Atomics.store(u32, W_HEAD_HI, this.#headHi);
    Atomics.store(u32, W_HEAD_LO, this.#headLo);
    this.#published = this.#headLo;
    this.wake();
  }


  // Acquire: loads the tail and validates it against the head and the last tail seen.
  #refreshTail(): number {
    // A plain read first: while it shows the tail already seen, nothing new was published and
    // the acquire load is skipped. Atomics.load is a builtin call that boxes every value from
    // 2^30 up (a garbage number per look once 1 GiB went through), and spinning and polling
    // ends look millions of times. The plain value is only compared, never used.
    if (!this.strict && this.u32[W_TAIL_LO] === this.#tailLo) return this.#tailLo;
    const tail = Atomics.load(this.u32, W_TAIL_LO);
    if (tail !== this.#tailLo) {
      if (((tail - this.#headLo) >>> 0) > this.capacity || (tail & 7) !== 0) {
        if (this.u32.length === 0) this.checkLive();
        this.fail(corrupt('tail', `tail ${tail} is not an 8-aligned position at most ${this.capacity} bytes ahead of head ${this.#headLo}`));
      }
      if (((tail - this.#tailLo) >>> 0) > this.capacity) {
        this.fail(corrupt('tail', `tail ran backwards from ${this.#tailLo} to ${tail}`));
      }
      this.#tailLo = tail;
    }
    return tail;
  }

  // Writer-closed = 2 (SPEC 2.8): the writer ended with an error. Only asked at EOF.
  #aborted(): boolean {
    return this.#closedWith === 2;
  }

  #endError(): ChannelError {
    return this.#aborted()
      ? new ChannelError('ERR_IVSHMEM_CHANNEL_ABORTED', 'channel: the writer closed the channel with an error; the messages before it were all it sent')
      : new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: end of stream (the writer closed the channel)');
  }

  // EOF: the writer's closed flag, then (seq-cst after it) a tail equal to our head. At EOF
  // the ring is finished on our side too: say so (SPEC 2.8), so its owner may reuse it.
  #eof(): boolean {
    if (this.#finished) return true;
    const closed = Atomics.load(this.u32, W_WRITER_CLOSED);
    if (closed === 0) return false;
    if (this.#refreshTail() !== this.#headLo) return false;
    this.#closedWith = closed;
    if (!this.#finished && this.u32.length !== 0 && !this.detached) {
      this.#finished = true;
      this.retire(W_READER_CLOSED, false);
    }
    return true;
  }
}
