import { Buffer } from 'node:buffer';
import { fail } from '../errors.js';
import { bytesCodec, type Codec } from './codec.js';
import { ChannelError, corrupt } from './errors.js';
import {
  RECORD_TYPE_MAX,
  RECORD_TYPE_PADDING,
  W_CONSUMER_WAIT,
  W_DATA,
  W_HEAD_LO,
  W_PRODUCER_WAIT,
  W_READER_CLOSED,
  W_TAIL_HI,
  W_TAIL_LO,
  W_WRITER_CLOSED,
} from './layout.js';
import { whenFormatted, type ChannelOptions, type OpenOptions } from './header.js';
import { BlockingEnd, timedOut, type BlockingOptions } from './blocking.js';
import { RESOLVED } from './ring.js';

const TWO32 = 2 ** 32;

/** Options of {@link ChannelWriter.send} and friends. */
export interface SendOptions {
  /** Gives up waiting for space; the message is then not sent. */
  signal?: AbortSignal;
  /** Record type 0..65535 handed to the reader's codec and `drain` (default 0). */
  type?: number;
}

/**
 * The producing end of a channel: one per ring. Messages are published in order; the reader
 * is woken only when it announced that it sleeps.
 *
 * @example
 * ```ts
 * const writer = new ChannelWriter(device.memory, { offset: 0, size: 1 << 16, codec: utf8Codec, format: true });
 * await writer.send('hello');
 * writer.close(); // the reader sees EOF after the last message
 * ```
 */
export class ChannelWriter<T = Uint8Array> extends BlockingEnd<T> {
  #tailLo: number; // authoritative: only this end writes the tail
  #tailHi: number;
  #headLo: number; // last validated head seen
  #into: boolean;
  readonly #bytes: boolean; // the built-in bytes codec: copied without calls through the codec
  #pad = 0; // padding bytes the last reserve() put before its record
  #claim = -1; // data index of an open claim, or -1
  #claimSize = 0;
  #closed = false;
  #readerGone = false; // reader-closed was seen non-zero once
  // Sends that had to wait run one after another, and nothing overtakes them: publishing stays
  // in call order even for sends nobody awaited.
  #queue: Promise<unknown> = RESOLVED;
  #waiting = 0;

  /** Attaches to the ring at `options.offset` (formatting it first with `format: true`). */
  constructor(memory: ArrayBuffer, options: ChannelOptions<T> = {}) {
    super(memory, options, W_PRODUCER_WAIT, W_CONSUMER_WAIT);
    this.#into = typeof this.codec.encodeInto === 'function' && typeof this.codec.maxSize === 'function';
    this.#bytes = this.codec === (bytesCodec as unknown as Codec<T>);
    const u32 = this.u32;
    this.#tailLo = u32[W_TAIL_LO]!;
    this.#tailHi = u32[W_TAIL_HI]!;
    const head = Atomics.load(u32, W_HEAD_LO);
    if ((this.#tailLo & 7) !== 0) throw corrupt('tail', `tail ${this.#tailLo} is not a multiple of 8`);
    if ((head & 7) !== 0 || ((this.#tailLo - head) >>> 0) > this.capacity) {
      throw corrupt('head', `head ${head} is not a multiple of 8 within ${this.capacity} bytes behind tail ${this.#tailLo}`);
    }
    this.#headLo = head;
    if (Atomics.load(u32, W_WRITER_CLOSED) !== 0) {
      throw new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: the ring was closed by its writer; format it again to reuse it');
    }
  }

  /**
   * Attaches once the other side formatted the ring: where `new ChannelWriter()` would fail with
   * `ERR_IVSHMEM_CHANNEL_CORRUPT` (magic) because this end came first, this waits for the magic
   * (up to `timeout` ms, default 10 s, then `ERR_IVSHMEM_TIMEOUT`). Other header problems reject
   * at once. Not for the formatting end: that one uses `format: true`.
   */
  static async open<T = Uint8Array>(memory: ArrayBuffer, options: ChannelOptions<T> & OpenOptions = {}): Promise<ChannelWriter<T>> {
    const { signal, timeout, ...channel } = options;
    if (!channel.format) await whenFormatted(memory, channel, { signal, timeout });
    return new ChannelWriter<T>(memory, channel);
  }

  /** Formats a ring and attaches to it: `new ChannelWriter(memory, { ...options, format: true })`. */
  static create<T = Uint8Array>(memory: ArrayBuffer, options: ChannelOptions<T> = {}): ChannelWriter<T> {
    return new ChannelWriter(memory, { ...options, format: options.format || true });
  }

  /** True once {@link ChannelWriter.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes free for records right now (an instantaneous view). */
  get free(): number {
    if (this.error) return 0;
    if (this.u32.length === 0) this.checkLive();
    this.#refreshHead();
    return this.capacity - ((this.#tailLo - this.#headLo) >>> 0);
  }

  /**
   * Sends `value` if it fits now; returns false when the ring is full. Throws when the message
   * can never fit (`ERR_IVSHMEM_MESSAGE_TOO_LARGE`), after `close()` or once the reader closed
   * (`ERR_IVSHMEM_CHANNEL_CLOSED`), or when the reader corrupted the ring.
   */
  trySend(value: T, type = 0): boolean {
    this.#usable(type);
    if (this.#waiting > 0 || !this.#put(value, type)) return false;
    this.#flush();
    return true;
  }

  /** Sends `value`, waiting for space while the ring is full (backpressure). */
  send(value: T, options?: SendOptions): Promise<void> {
    try {
      const type = options?.type ?? 0;
      this.#usable(type);
      if (this.#waiting === 0 && this.#put(value, type)) {
        this.#flush();
        return RESOLVED;
      }
      const signal = options?.signal;
      return this.#inTurn(async () => {
        await this.until(() => this.#usable(type) && this.#put(value, type), signal);
        this.#flush();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Sends `value`, blocking this thread while the ring is full (run-to-completion; see
   * `ChannelReader.receiveSync`): spins on the reader's head, then sleeps in the kernel on the
   * doorbell's eventfd. Throws `ERR_IVSHMEM_TIMEOUT` (nothing sent) when `options.timeout`
   * passed, `ERR_IVSHMEM_CHANNEL_BUSY` while asynchronous sends wait (they need the event loop
   * this call would block), and what {@link ChannelWriter.trySend} throws. The reader is rung
   * only when it announced sleep: a reader that spins costs this end no doorbell. On a bus
   * channel always pass a timeout: the bus notices a dead reader with timers, which cannot run
   * while this blocks.
   */
  sendSync(value: T, options?: BlockingOptions & { type?: number }): void {
    const type = options?.type ?? 0;
    this.#usable(type);
    if (this.#waiting > 0) {
      throw new ChannelError('ERR_IVSHMEM_CHANNEL_BUSY', 'channel: sendSync() while asynchronous sends wait for space; await them first');
    }
    if (options !== undefined) this.blockingOptions(options, true);
    if (!this.#put(value, type) && !this.untilSync(() => this.#usable(type) && this.#put(value, type), W_HEAD_LO, options)) {
      throw timedOut('send', options?.timeout);
    }
    this.#flush();
  }

  // Runs `job` after every send that is already waiting, whatever became of them.
  #inTurn<R>(job: () => Promise<R>): Promise<R> {
    this.#waiting++;
    const run = this.#queue.then(job, job);
    this.#queue = run.then(
      () => this.#waiting--,
      () => this.#waiting--,
    );
    return run;
  }

  /**
   * Sends every value in order, publishing as many as fit at once and ringing the reader at
   * most once per such batch. On abort or error, the values before the failing one were sent;
   * the returned count on success is `values.length`.
   */
  sendBatch(values: Iterable<T>, options?: SendOptions): Promise<number> {
    try {
      const type = options?.type ?? 0;
      this.#usable(type);
      const signal = options?.signal;
      if (!Array.isArray(values)) return this.#inTurn(() => this.#sendIterable(values, type, signal));
      const list = values as readonly T[];
      if (this.#waiting > 0) return this.#inTurn(() => this.#sendArraySlow(list, 0, type, signal));
      const next = this.#putMany(list, 0, type);
      if (next === list.length) return Promise.resolve(next);
      return this.#inTurn(() => this.#sendArraySlow(list, next, type, signal));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #sendArraySlow(list: readonly T[], next: number, type: number, signal: AbortSignal | undefined): Promise<number> {
    while (next < list.length) {
      await this.until(() => {
        this.#usable(type);
        const moved = this.#putMany(list, next, type);
        const progress = moved > next;
        next = moved;
        return progress;
      }, signal);
      // Anything may have happened while we waited (close(), a claim, the reader leaving).
      this.#usable(type);
      next = this.#putMany(list, next, type);
    }
    return list.length;
  }

  /**
   * Writes `list[from..]` until the ring is full and returns the index of the first value not
   * sent. Publishes at least every quarter ring (holding more back would leave the reader idle
   * while this end fills the ring, and this end idle while the reader empties it), and
   * everything written before returning, also when a codec throws.
   */
  #putMany(list: readonly T[], from: number, type: number): number {
    const publishEvery = this.capacity >>> 2;
    const n = list.length;
    let published = this.#tailLo;
    let i = from;
    try {
      for (; i < n; i++) {
        if (!this.#put(list[i]!, type)) break;
        if (((this.#tailLo - published) >>> 0) >= publishEvery) {
          this.#flush();
          published = this.#tailLo;
        }
      }
    } finally {
      if (this.#tailLo !== published) this.#flush();
    }
    return i;
  }

  async #sendIterable(values: Iterable<T>, type: number, signal: AbortSignal | undefined): Promise<number> {
    const publishEvery = this.capacity >>> 2;
    let sent = 0;
    let published = this.#tailLo;
    try {
      for (const value of values) {
        // The loop awaits: check again each time that sending is still allowed.
        this.#usable(type);
        if (!this.#put(value, type)) {
          this.#flush();
          published = this.#tailLo;
          await this.until(() => this.#usable(type) && this.#put(value, type), signal);
        }
        sent++;
        if (((this.#tailLo - published) >>> 0) >= publishEvery) {
          this.#flush();
          published = this.#tailLo;
        }
      }
    } finally {
      if (this.#tailLo !== published) this.#flush();
    }
    return sent;
  }

  /**
   * Reserves room for a payload of up to `size` bytes and returns a writable view of it, or
   * null while the ring is full. Fill the view, then {@link ChannelWriter.commit} or
   * {@link ChannelWriter.abort}; no other send may happen in between.
   */
  tryClaim(size: number): Uint8Array | null {
    return this.#waiting > 0 ? (this.#usable(0), null) : this.#tryClaim(size);
  }

  #tryClaim(size: number): Uint8Array | null {
    this.#usable(0);
    this.#checkSize(size);
    const at = this.#reserve(size);
    if (at < 0) return null;
    this.#claim = at;
    this.#claimSize = size;
    return this.data.subarray(at + 8, at + 8 + size);
  }

  /** {@link ChannelWriter.tryClaim}, waiting for space. */
  async claim(size: number, options?: { signal?: AbortSignal }): Promise<Uint8Array> {
    let view = this.tryClaim(size);
    if (view) return view;
    return this.#inTurn(async () => {
      await this.until(() => this.#usable(0) && (view = this.#tryClaim(size)) !== null, options?.signal);
      return view!;
    });
  }

  /** Publishes the claimed record with its first `length` bytes (default: the whole claim). */
  commit(length = this.#claimSize, type = 0): void {
    if (this.#claim < 0) fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'commit(): nothing is claimed');
    if (!Number.isInteger(length) || length < 0 || length > this.#claimSize) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `commit(): length must be an integer 0..${this.#claimSize}, got ${String(length)}`);
    }
    this.#checkType(type);
    const at = this.#claim;
    this.#claim = -1;
    this.#usable(type);
    this.#record(at, length, type);
    this.wake();
  }

  /** Drops the claimed record; nothing is published. */
  abort(): void {
    this.#claim = -1;
  }

  /** {@link ChannelWriter.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Ends the channel: after the messages already sent, the reader sees EOF. Pending sends
   * reject with `ERR_IVSHMEM_CHANNEL_CLOSED`; an open claim is dropped. Idempotent.
   *
   * With `{ error: true }` the channel ends as failed (writer-closed = 2, SPEC 2.8): needing no
   * ring space, it works on a full ring, and the reader, once it has received every message
   * sent before, fails with `ERR_IVSHMEM_CHANNEL_ABORTED` instead of seeing EOF.
   */
  close(options?: { error?: boolean }): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#claim = -1;
    this.stop(new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: the writer was closed'));
    // 2: closed with an error (SPEC 2.8).
    this.retire(W_WRITER_CLOSED, true, options?.error === true ? 2 : 1);
  }

  // Throws unless sending is allowed now; true so that it chains in ready() predicates.
  #usable(type: number): true {
    if (this.error) throw this.error;
    if (this.#closed) throw new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: send after close()');
    if (this.u32.length === 0) this.checkLive();
    if (this.#claim >= 0) throw new ChannelError('ERR_IVSHMEM_CHANNEL_BUSY', 'channel: a claim is open; commit() or abort() it first');
    // A plain read: this flag orders nothing, and the fast path should not pay for a fence;
    // a sleeping end's last look is a seq-cst load (see `strict`).
    // Latched: a reader that closed never reopens the ring, so a word found 0 again later
    // means a peer reset it or the bytes became another ring; either way not ours to publish in.
    if (this.#readerGone || (this.strict ? Atomics.load(this.u32, W_READER_CLOSED) : this.u32[W_READER_CLOSED]) !== 0) {
      this.#readerGone = true;
      throw new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: the reader closed the channel');
    }
    if (type !== 0) this.#checkType(type);
    return true;
  }

  #checkType(type: number): void {
    if (!Number.isInteger(type) || type < 0 || type > RECORD_TYPE_MAX) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: type must be an integer 0..${RECORD_TYPE_MAX}, got ${String(type)}`);
    }
  }

  #checkSize(size: number): void {
    if (!Number.isInteger(size) || size < 0) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: message size must be a non-negative integer, got ${String(size)}`);
    }
    if (size > this.maxMessageSize) {
      throw new ChannelError(
        'ERR_IVSHMEM_MESSAGE_TOO_LARGE',
        `channel: a ${size}-byte message does not fit in this ring (at most ${this.maxMessageSize} bytes with capacity ${this.capacity})`,
      );
    }
  }

  /**
   * Encodes and writes one record without publishing it; false (nothing written) when there is
   * no room yet. The bytes codec is built in: no calls through the codec object, and the
   * payload is its own size bound.
   */
  #put(value: T, type: number): boolean {
    if (!this.#bytes) return this.#putCodec(value, type);
    const length = (value as Uint8Array).byteLength;
    this.#checkSize(length);
    const at = this.#reserve(length);
    if (at < 0) return false;
    this.data.set(value as Uint8Array, at + 8);
    this.#append(at, length, type);
    return true;
  }

  #putCodec(value: T, type: number): boolean {
    const codec = this.codec;
    let at: number;
    let length: number;
    if (this.#into) {
      const max = codec.maxSize!(value);
      if (max > this.maxMessageSize) return this.#writeOversized(value, type, max);
      this.#checkSize(max);
      at = this.#reserve(max);
      if (at < 0) return false;
      length = codec.encodeInto!(value, this.data, at + 8);
      if (!(length >= 0 && length <= max)) {
        fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: codec ${codec.name ?? ''} wrote ${String(length)} bytes, more than its maxSize ${max}`);
      }
    } else {
      const bytes = codec.encode!(value);
      length = bytes.byteLength;
      this.#checkSize(length);
      at = this.#reserve(length);
      if (at < 0) return false;
      this.data.set(bytes, at + 8);
    }
    this.#append(at, length, type);
    return true;
  }

  // A codec's bound may exceed the ring when the real payload fits (UTF-8 reserves 3 bytes per
  // character): encode into scratch memory to learn the real size. Rare, so it may allocate.
  #writeOversized(value: T, type: number, max: number): boolean {
    if (!Number.isSafeInteger(max) || max > 2 ** 31) this.#checkSize(max);
    const scratch = Buffer.allocUnsafe(max);
    const length = this.codec.encodeInto!(value, scratch, 0);
    if (!(length >= 0 && length <= max)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: codec ${this.codec.name ?? ''} wrote ${String(length)} bytes, more than its maxSize ${max}`);
    }
    this.#checkSize(length);
    const at = this.#reserve(length);
    if (at < 0) return false;
    scratch.copy(this.data, at + 8, 0, length);
    this.#append(at, length, type);
    return true;
  }

  /**
   * Finds room for a record with a `length`-byte payload at the tail; returns its data index,
   * or -1. A record never wraps: when it does not fit before the end of the data area, a
   * padding record fills the rest (published alone if the record itself must wait).
   */
  #reserve(length: number): number {
    const capacity = this.capacity;
    const stride = 8 + ((length + 7) & ~7);
    const at = this.#tailLo & this.mask;
    const contiguous = capacity - at;
    const need = stride <= contiguous ? stride : contiguous + stride;
    if (need > capacity - ((this.#tailLo - this.#headLo) >>> 0)) {
      const free = capacity - this.#refreshHead();
      if (need > free) {
        if (stride > contiguous && contiguous <= free) {
          this.#padding(at, contiguous);
          this.#tail(contiguous);
          // The reader must consume the padding before the record can fit: wake it for that.
          this.#flush();
        }
        return -1;
      }
    }
    if (stride <= contiguous) {
      this.#pad = 0;
      return at;
    }
    this.#padding(at, contiguous);
    this.#pad = contiguous;
    return 0;
  }

  #padding(at: number, bytes: number): void {
    const w = W_DATA + (at >>> 2);
    this.u32[w] = bytes - 8;
    this.u32[w + 1] = RECORD_TYPE_PADDING;
  }

  // Writes the record header and moves the local tail past it (and its padding).
  #append(at: number, length: number, type: number): void {
    const w = W_DATA + (at >>> 2);
    this.u32[w] = length;
    this.u32[w + 1] = type;
    this.#tail(this.#pad + 8 + ((length + 7) & ~7));
    this.#pad = 0;
  }

  #record(at: number, length: number, type: number): void {
    this.#append(at, length, type);
    this.#publish();
  }

  #tail(bytes: number): void {
    let lo = this.#tailLo + bytes;
    if (lo >= TWO32) {
      lo -= TWO32;
      this.#tailHi = (this.#tailHi + 1) >>> 0;
    }
    this.#tailLo = lo;
  }

  /**
   * Release: the seq-cst store of the tail's low word publishes every record before it. The
   * high word goes first, so an observer that reads low then high never sees an old high with
   * a wrapped low.
   */
  #publish(): void {
    const u32 = this.u32;
    if (u32[W_TAIL_HI] !== this.#tailHi) Atomics.store(u32, W_TAIL_HI, this.#tailHi);
    Atomics.store(u32, W_TAIL_LO, this.#tailLo);
  }

  #flush(): void {
    this.#publish();
    this.wake();
  }


  // Loads and validates the consumer's head; returns the bytes in use.
  #refreshHead(): number {
    // As the reader's tail: a plain read shows whether the head moved at all, and only a moved
    // head is loaded (acquire) and validated; the plain value is only compared.
    if (!this.strict && this.u32[W_HEAD_LO] === this.#headLo) return (this.#tailLo - this.#headLo) >>> 0;
    const head = Atomics.load(this.u32, W_HEAD_LO);
    const used = (this.#tailLo - head) >>> 0;
    if (used > this.capacity || ((head - this.#headLo) >>> 0) > ((this.#tailLo - this.#headLo) >>> 0) || (head & 7) !== 0) {
      if (this.u32.length === 0) this.checkLive();
      this.fail(corrupt('head', `head ${head} is not between the last head ${this.#headLo} and the tail ${this.#tailLo}, 8-aligned`));
    }
    this.#headLo = head;
    return used;
  }
}
