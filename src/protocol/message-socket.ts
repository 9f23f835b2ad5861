import { ivshmemError, IvshmemError, type ErrnoCode } from '../errors.js';
import { native, type NativeWatcher } from '../native.js';
import type { FdRef } from './fd-ref.js';

/** What a {@link MessageSocket} reports to its owner. */
export interface MessageHandlers {
  /**
   * One whole 8-byte message; `fd` is -1 when none was attached. The handler owns the fd.
   * `value` is NaN beyond ±2^53; `raw` is the integer as sent, for error messages.
   */
  message(value: number, fd: number, raw: bigint): void;
  /** The stream ended: cleanly (no error), or on a socket or framing error. */
  end(error?: IvshmemError): void;
}

const MESSAGE_BYTES = 8;

/** How much may wait in a socket's send queue before its peer counts as not reading. */
export interface QueueLimit {
  /** Queued messages. */
  messages: number;
  /** Queued messages that carry an fd. */
  fds: number;
}

interface Outgoing {
  value: number;
  /** Bytes of it already written (a partial write leaves the rest for later). */
  offset: number;
  fd: FdRef | null;
}

/**
 * The ivshmem-server wire unit over a non-blocking UNIX stream socket: little-endian signed
 * 64-bit integers, each optionally carrying one fd. Reads never cross a message boundary, so
 * every fd stays with the message it was sent with; writes queue on EAGAIN and on partial
 * writes, and the fd goes with the first byte.
 */
export class MessageSocket {
  readonly fd: number;
  readonly path: string;
  #handlers: MessageHandlers;
  #watcher: NativeWatcher;
  #in = new Uint8Array(MESSAGE_BYTES);
  #inView = new DataView(this.#in.buffer);
  #have = 0;
  #inFd = -1;
  // One small record per queued message; its bytes are made when it goes out. (A buffer per
  // message cost a backing store each: hundreds of thousands of them for one wave of clients.)
  #out: Outgoing[] = [];
  #outHead = 0;
  #queuedFds = 0;
  #scratch = new Uint8Array(MESSAGE_BYTES);
  #scratchView = new DataView(this.#scratch.buffer);
  #limit: QueueLimit;
  #reading = false;
  #closed = false;
  #ending = false;

  /** `limit`: what may wait to be sent; past it the peer counts as not reading and the socket ends. */
  constructor(fd: number, path: string, handlers: MessageHandlers, limit: QueueLimit = { messages: Infinity, fds: Infinity }) {
    this.fd = fd;
    this.#limit = limit;
    this.path = path;
    this.#handlers = handlers;
    this.#watcher = new native.Watcher(fd, (error, events) => this.#onEvents(error, events));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Starts delivering messages. */
  start(): void {
    this.#reading = true;
    this.#arm();
  }

  /** Keeps (or stops keeping) the process alive while the socket is open. */
  ref(on: boolean): void {
    if (on) this.#watcher.ref();
    else this.#watcher.unref();
  }

  /** Messages waiting to be sent (a partly sent one included). */
  get queued(): number {
    return this.#out.length - this.#outHead;
  }

  /**
   * Sends one message, or queues it. A queued fd is retained until it has gone out, so its
   * owner may release it at any time. Errors end the socket later, never inside this call.
   */
  send(value: number, fd: FdRef | null = null): void {
    if (this.#closed || this.#ending) return;
    if (this.queued >= this.#limit.messages || (fd && this.#queuedFds >= this.#limit.fds)) {
      const what = fd && this.#queuedFds >= this.#limit.fds ? `${this.#queuedFds} fds` : `${this.queued} messages`;
      return this.#endLater(this.#violation(`${what} wait to be read, its limit: the peer does not read`));
    }
    this.#out.push({ value, offset: 0, fd: fd?.retain() ?? null });
    if (fd) this.#queuedFds++;
    if (this.queued === 1) this.#flush();
  }

  /**
   * Takes back the queued messages `value` that carry an fd and have not started to go out;
   * returns how many. The server uses it for a peer that left before this client heard of it.
   */
  withdraw(value: number): number {
    let removed = 0;
    const first = this.#outHead + (this.queued > 0 && this.#out[this.#outHead]!.offset > 0 ? 1 : 0);
    let keep = first;
    for (let i = first; i < this.#out.length; i++) {
      const m = this.#out[i]!;
      if (m.value === value && m.fd) {
        m.fd.release();
        this.#queuedFds--;
        removed++;
      } else {
        this.#out[keep++] = m;
      }
    }
    this.#out.length = keep;
    if (this.queued === 0) this.#arm();
    return removed;
  }

  /** Closes the socket without reporting an end. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    if (this.#inFd >= 0) native.close(this.#inFd);
    this.#inFd = -1;
    for (const m of this.#out.splice(0)) m.fd?.release();
    this.#outHead = 0;
    this.#queuedFds = 0;
    native.close(this.fd);
  }

  #arm(): void {
    if (this.#closed) return;
    const events = (this.#reading ? native.READABLE : 0) | (this.queued > 0 ? native.WRITABLE : 0);
    if (events) this.#watcher.start(events);
    else this.#watcher.stop();
  }

  #end(error?: IvshmemError): void {
    if (this.#closed) return;
    this.close();
    this.#handlers.end(error);
  }

  // The owner may be in the middle of a loop over its peers: report the end after it.
  #endLater(error: IvshmemError): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    queueMicrotask(() => this.#end(error));
  }

  #onEvents(error: ErrnoCode | null, events: number): void {
    if (error) {
      // libuv reports any POLLERR as EBADF: a read tells the real story (ECONNRESET, EOF).
      this.#read();
      return this.#end(ivshmemError(error, `${error}: socket '${this.path}'`, { path: this.path }));
    }
    if (events & native.WRITABLE) this.#flush();
    if (events & native.READABLE) this.#read();
  }

  #flush(): void {
    try {
      while (this.queued > 0 && !this.#closed && !this.#ending) {
        const head = this.#out[this.#outHead]!;
        this.#scratchView.setBigInt64(0, BigInt(head.value), true);
        const n = native.socketSend(this.fd, this.#scratch.subarray(head.offset), head.offset === 0 && head.fd ? head.fd.fd : -1, this.path);
        if (n < 0) break;
        head.offset += n;
        // The kernel holds its own reference to an fd in flight from the first byte on.
        if (head.fd) {
          head.fd.release();
          head.fd = null;
          this.#queuedFds--;
        }
        if (head.offset === MESSAGE_BYTES) this.#outHead++;
      }
      // Sent messages leave the array in batches: shift() per message is quadratic on long queues.
      if (this.#outHead > 0 && (this.#outHead === this.#out.length || this.#outHead >= 1024)) {
        this.#out.splice(0, this.#outHead);
        this.#outHead = 0;
      }
    } catch (error) {
      return this.#endLater(error as IvshmemError);
    }
    this.#arm();
  }

  #read(): void {
    while (!this.#closed) {
      let got;
      try {
        got = native.socketReceive(this.fd, this.#in.subarray(this.#have, MESSAGE_BYTES), this.path);
      } catch (error) {
        return this.#end(error as IvshmemError);
      }
      if (got === null) return;
      if (got.bytes === 0) {
        return this.#end(this.#have > 0 ? this.#violation(`the stream ended inside a message (${this.#have} of 8 bytes)`) : undefined);
      }
      if (got.truncated || got.fds.length > 1 || (got.fds.length === 1 && (this.#have > 0 || this.#inFd >= 0))) {
        for (const fd of got.fds) native.close(fd);
        const why = got.truncated
          ? 'control data was truncated (MSG_CTRUNC): too many fds in flight'
          : got.fds.length > 1
            ? `${got.fds.length} fds came with one message (at most 1)`
            : 'an fd came in the middle of a message';
        return this.#end(this.#violation(why));
      }
      if (got.fds.length === 1) this.#inFd = got.fds[0]!;
      this.#have += got.bytes;
      if (this.#have < MESSAGE_BYTES) continue;
      const big = this.#inView.getBigInt64(0, true);
      // Out-of-range values are refused by the owner; keep them visibly out of range.
      const value = big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER) ? Number.NaN : Number(big);
      const fd = this.#inFd;
      this.#have = 0;
      this.#inFd = -1;
      this.#handlers.message(value, fd, big);
    }
  }

  #violation(why: string): IvshmemError {
    return ivshmemError('ERR_IVSHMEM_PROTOCOL', `ivshmem protocol error on '${this.path}': ${why}`, { path: this.path });
  }
}
