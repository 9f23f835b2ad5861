import { Buffer } from 'node:buffer';
import { endianness } from 'node:os';
import { abortError, fail, throwIfAborted } from '../errors.js';
import type { Codec } from './codec.js';
import { bytesCodec } from './codec.js';
import { ChannelError } from './errors.js';
import { attachRing, checkHeader, placement, type ChannelOptions } from './header.js';
import { DoorbellLimit } from './doorbell-limit.js';
import { DOORBELL_EVERY_MS, W_CONSUMER_WAIT, W_HEAD_LO, W_TAIL_LO } from './layout.js';
import { pollUntil } from './polling-sleep.js';
import { DIRECT, forgetAbort, isWaitStrategy, onAbort, POLLING, pollingWaitStrategy, type DirectWake, type PollingTimes, type WaitStrategy } from './wait.js';

/** A sleep parked on a direct strategy: resolved from the wake callback. */
interface Parked {
  ready: () => boolean;
  resolve: () => void;
  reject: (error: unknown) => void;
  signal: AbortSignal | undefined;
  aborted: ((reason: unknown) => void) | null;
  /** Holds one announced sleep (an odd wait word) to take back when it ends. */
  announced: boolean;
}

// Typed arrays use the host's byte order and the format is little-endian.
if (endianness() !== 'LE') throw new Error('ivshmem channels need a little-endian host');

// Fast paths hand back these settled promises instead of allocating one per call.
/** @internal */ export const RESOLVED: Promise<void> = Promise.resolve();
/** @internal */ export const TRUE: Promise<boolean> = Promise.resolve(true);
/** @internal */ export const FALSE: Promise<boolean> = Promise.resolve(false);

/** What both ends share: geometry, failure state, and the spin-then-sleep loop. @hidden */
export abstract class RingEnd<T> {
  /** @internal */ protected readonly u32: Uint32Array;
  /** @internal */ protected readonly data: Buffer;
  /** @internal */ protected readonly mask: number;
  /** @internal */ protected readonly codec: Codec<T>;
  /** @internal */ protected readonly strategy: WaitStrategy;
  /** @internal */ protected readonly size: number;
  /** @internal */ protected error: ChannelError | null = null;
  /** @internal */ protected ended = false;
  /** @internal The channel's spin, in milliseconds. */
  protected readonly spin: number;
  #spinBudget: number;
  #sleepers = 0;
  #waitSeq = 0;
  readonly #waitWord: number;
  readonly #peerWaitWord: number;
  /**
   * @internal Over a SharedArrayBuffer (threads of one process): the ring's words as Int32Array
   * for Atomics.wait/notify; this end's position word is notified on every publish.
   */
  protected readonly shared: Int32Array | null;
  readonly #ownWord: number;
  #rung = -1; // the peer's wait sequence last rung: one sleep gets one doorbell
  // SPEC 2.7: a token bucket bounds the doorbells the other end's wait word can draw from us.
  readonly #limit: DoorbellLimit;
  readonly #stop = new AbortController();
  readonly #checkLive = (): void => this.checkLive();

  /** Data-area bytes. */
  readonly capacity: number;
  /** Largest payload this channel carries. */
  readonly maxMessageSize: number;

  /** @internal */
  /** `waitWord`: this end's wait word; `peerWaitWord`: the other end's, read after publishing. */
  protected constructor(memory: ArrayBuffer, options: ChannelOptions<T>, waitWord: number, peerWaitWord: number) {
    const geometry = attachRing(memory, options as ChannelOptions<unknown>);
    this.u32 = geometry.u32;
    this.data = geometry.data;
    this.capacity = geometry.capacity;
    this.mask = geometry.capacity - 1;
    this.maxMessageSize = geometry.capacity - 8;
    this.size = placement(memory, options).size;
    this.codec = options.codec ?? (bytesCodec as unknown as Codec<T>);
    if (typeof this.codec.decode !== 'function' || (typeof this.codec.encode !== 'function' && (typeof this.codec.encodeInto !== 'function' || typeof this.codec.maxSize !== 'function'))) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'channel: a codec needs decode() and either encode() or maxSize() with encodeInto()');
    }
    if (options.wait !== undefined && !isWaitStrategy(options.wait)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: wait must be a WaitStrategy (deviceWaitStrategy() or pollingWaitStrategy()), got ${typeof options.wait === 'object' ? JSON.stringify(options.wait) : String(options.wait)}`);
    }
    this.strategy = options.wait ?? pollingWaitStrategy();
    const spin = options.spin ?? 20;
    if (!(spin >= 0)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: spin must be a number of microseconds >= 0, got ${String(spin)}`);
    this.spin = spin / 1000;
    this.#spinBudget = this.spin;
    this.#waitWord = waitWord;
    this.#peerWaitWord = peerWaitWord;
    this.shared = typeof SharedArrayBuffer === 'function' && memory instanceof SharedArrayBuffer ? new Int32Array(memory, this.u32.byteOffset, this.u32.length) : null;
    this.#ownWord = waitWord === W_CONSUMER_WAIT ? W_HEAD_LO : W_TAIL_LO;
    // Our own wait word may hold a value from a previous user of the ring: continue from it, even.
    this.#waitSeq = ((this.u32[waitWord]! + 1) & ~1) >>> 0;
    this.#limit = new DoorbellLimit((force) => {
      if (this.u32.length === 0 || this.error) return;
      try {
        this.wake(force);
      } catch {
        // A timer has nobody to throw to: a device closed meanwhile shows at the next call.
      }
    });
  }

  /** The error that failed the channel, or null. */
  get failure(): ChannelError | null {
    return this.error;
  }

  /**
   * Fails this end locally with `error` (the bus does, when the other peer is gone), without
   * touching shared memory: pending and later calls reject with it. The first failure wins.
   */
  abandon(error: ChannelError): void {
    this.detach();
    if (this.error) return;
    this.error = error;
    this.stop(error);
  }

  /**
   * @internal Stops writing to the ring (the bus does when the ring's section may get another
   * owner, SPEC 3.5): this end may still read, but its position, closed word and wait word stay
   * as they are, and it rings nobody.
   */
  detach(): void {
    this.detached = true;
  }

  /** @internal True once this end may no longer write to the ring: see {@link RingEnd.detach}. */
  protected detached = false;

  /**
   * @internal Stores this end's closed word (`closedWord`) as its last write to the ring (SPEC
   * 2.8): once it is there the ring's owner may free the bytes and format a new ring over them,
   * so a sleep still announced is taken back first, the closing doorbell (with `ring`) goes
   * right after, and from then on this end writes and rings nothing, like a detached one.
   */
  protected retire(closedWord: number, ring: boolean, value = 1): void {
    if (this.detached || this.u32.length === 0) return void (this.detached = true);
    if (this.#sleepers > 0 && this.strategy.wakes) {
      Atomics.store(this.u32, this.#waitWord, (this.#waitSeq = (this.#waitSeq + 1) >>> 0));
    }
    Atomics.store(this.u32, closedWord, value);
    if (ring) this.wake(true, true);
    this.detached = true;
  }

  /**
   * @internal Rings the other end if it announced sleep (an odd wait word) since we last rang
   * it, or always with `force`. Runs after a publish (SPEC "Sleeping", the peer's step 4).
   * The one `closing` doorbell of an end (after its closed word) skips the token bucket: it
   * cannot repeat, and holding it back would ring after the ring may have a new owner.
   */
  protected wake(force = false, closing = false): void {
    // A thread blocked in untilSync on a SharedArrayBuffer sleeps in Atomics.wait on our
    // position word, whatever the strategy: wake it (no waiter: a cheap look at a list).
    if (this.shared !== null) Atomics.notify(this.shared, this.#ownWord);
    if (!this.strategy.wakes || this.detached) return; // nothing to ring with, or nobody to ring
    const seq = Atomics.load(this.u32, this.#peerWaitWord);
    if ((seq & 1) === 0 || (seq === this.#rung && !force)) return;
    if (!closing && !this.#limit.take()) return this.#limit.defer(force);
    this.#rung = seq;
    this.strategy.notify();
  }

  /**
   * @internal For a blocking thread, which runs no timers: sends a doorbell the limit deferred
   * if a token is there now. Returns -1 when none is pending, or the milliseconds after which
   * to try again (the blocking loop caps its sleep to it).
   */
  protected ringDeferred(): number {
    const force = this.#limit.cancel();
    if (force === null) return -1;
    this.wake(force);
    return this.#limit.pending ? DOORBELL_EVERY_MS : -1;
  }

  /** @internal Moves the channel to the failed state (first error wins) and throws it. */
  protected fail(error: ChannelError): never {
    if (!this.error) {
      this.error = error;
      this.#stop.abort(error);
    }
    throw this.error;
  }

  /** @internal Ends the channel locally: pending waits reject with `reason`. */
  protected stop(reason: ChannelError): void {
    this.ended = true;
    this.#stop.abort(reason);
  }

  /** @internal Throws if the ring header no longer validates (a slow-path check). */
  protected checkLive(): void {
    if (this.u32.length === 0) this.fail(new ChannelError('ERR_IVSHMEM_CLOSED', 'channel: the shared memory was unmapped (device closed)'));
    const error = checkHeader(this.u32, this.capacity, this.size);
    if (error) this.fail(error);
  }

  /**
   * @internal Waits until `ready()` is true: spins for the adaptive budget, then announces
   * sleep in the own wait word (seq-cst store), looks once more (seq-cst loads in `ready`), and
   * only then sleeps. The peer publishes, then loads the wait word: with both sides seq-cst,
   * one of them sees the other's store, so a wake-up cannot be lost.
   */
  protected until(ready: () => boolean, signal: AbortSignal | undefined): Promise<void> {
    // A wait the spin ends returns the settled promise: no async frame, no garbage.
    if (ready() || this.#spinUntil(ready)) return RESOLVED;
    return this.#sleep(ready, signal);
  }

  // Spins for the adaptive budget; true when `ready()` became true.
  #spinUntil(ready: () => boolean): boolean {
    if (!(this.spin > 0 && this.#spinBudget > 0)) return false;
    const start = performance.now();
    const budget = this.#spinBudget;
    for (let i = 1; ; i++) {
      if (ready()) {
        this.#spinBudget = Math.min(this.spin, this.#spinBudget * 2);
        return true;
      }
      if ((i & 127) === 0 && performance.now() - start > budget) break;
    }
    this.#spinBudget = Math.max(this.spin / 16, this.#spinBudget / 2);
    return false;
  }

  /**
   * @internal True while a sleeping end looks at the ring after announcing its sleep: the look
   * must be a seq-cst load (SPEC "Sleeping", step 2), not the plain-read fast path, which a
   * weakly ordered CPU may satisfy before the announcement is visible.
   */
  protected strict = false;

  /** @internal Runs `ready` as a {@link RingEnd.strict} look. */
  protected strictly(ready: () => boolean): boolean {
    this.strict = true;
    try {
      return ready();
    } finally {
      this.strict = false;
    }
  }

  // Sleeps parked on a direct strategy, and the one callback it calls for all of them.
  readonly #parked = new Set<Parked>();
  #direct: DirectWake | null | undefined;
  readonly #onWake = (): void => this.#wakeParked();

  #sleep(ready: () => boolean, signal: AbortSignal | undefined): Promise<void> {
    this.#direct ??= (this.strategy as { [DIRECT]?: DirectWake })[DIRECT] ?? null;
    if (this.#direct) return this.#park(ready, signal);
    return this.#sleepLoop(ready, signal);
  }

  /**
   * The sleep of a direct (doorbell) strategy: announce, look once more, then park until the
   * wake callback finds the ring ready. One promise per wait and nothing else: no closures, no
   * timers, no abort registration unless the caller passed a signal.
   */
  #park(ready: () => boolean, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const stop = this.#stop.signal;
      if (stop.aborted) return reject(abortError(stop.reason));
      if (signal?.aborted) return reject(abortError(signal.reason));
      this.announce();
      try {
        this.checkLive();
        if (this.strictly(ready)) {
          this.unannounce();
          return resolve();
        }
      } catch (error) {
        this.unannounce();
        return reject(error);
      }
      const parked: Parked = { ready, resolve, reject, signal, aborted: null, announced: true };
      if (this.#parked.size === 0) {
        this.#direct!.park(this.#onWake);
        if (!this.#stopListened) {
          this.#stopListened = true;
          stop.addEventListener('abort', () => this.#abortParked(null, abortError(stop.reason)), { once: true });
        }
      }
      this.#parked.add(parked);
      if (signal) {
        parked.aborted = (reason) => this.#abortParked(parked, reason);
        onAbort(signal, parked.aborted);
      }
    });
  }

  #stopListened = false;

  // Every wake-up (doorbell, device close, re-check tick) ends each parked sleep's announced
  // sleep and looks; one that is not ready announces a new sleep and looks again before it
  // stays parked (SPEC "Sleeping": a publish between the two looks rings the new value).
  #wakeParked(): void {
    for (const parked of this.#parked) {
      let ready = false;
      try {
        this.unannounce();
        parked.announced = false;
        this.checkLive();
        ready = this.strictly(parked.ready);
        if (!ready) {
          this.announce();
          parked.announced = true;
          ready = this.strictly(parked.ready);
        }
      } catch (error) {
        this.#finish(parked);
        parked.reject(error);
        continue;
      }
      if (ready) {
        this.#finish(parked);
        parked.resolve();
      }
    }
  }

  #finish(parked: Parked): void {
    if (parked.announced) this.unannounce();
    parked.announced = false;
    this.#parked.delete(parked);
    if (parked.aborted) forgetAbort(parked.signal!, parked.aborted);
    if (this.#parked.size === 0) this.#direct!.unpark(this.#onWake);
  }

  #abortParked(only: Parked | null, reason: unknown): void {
    for (const parked of only ? [only] : [...this.#parked]) {
      if (!this.#parked.has(parked)) continue;
      this.#finish(parked);
      parked.reject(reason);
    }
  }

  async #sleepLoop(ready: () => boolean, signal: AbortSignal | undefined): Promise<void> {
    const stop = this.#stop.signal;
    const both = signal ? AbortSignal.any([signal, stop]) : stop;
    const since = performance.now();
    const polling = (this.strategy as { [POLLING]?: PollingTimes })[POLLING];
    if (polling) return pollUntil(ready, this.#checkLive, both, since, polling);
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(both);
      this.checkLive();
      const announce = this.strategy.wakes && !this.detached; // detached: the wait word is not ours to store
      if (announce) this.announce();
      try {
        if (this.strictly(ready)) return;
        await this.strategy.wait(both, attempt, since);
      } finally {
        if (announce) this.unannounce();
      }
      // The wake-up may be the device closing: its memory is gone, say so before looking.
      this.checkLive();
      if (this.strictly(ready)) return;
    }
  }

  // Every entry into sleep stores a new odd value (first sleeper: even → odd; others: odd →
  // the next odd). The peer rings once per value it sees, so a second sleeper re-entering
  // after a wake-up that was not for it is still rung.
  /** @internal */
  protected announce(): void {
    this.#waitSeq = (this.#waitSeq + (this.#sleepers++ === 0 ? 1 : 2)) >>> 0;
    if (!this.detached) Atomics.store(this.u32, this.#waitWord, this.#waitSeq); // detached: not ours to store
  }

  // A plain store, not a seq-cst one: only the announce takes part in the store-fence-load
  // pattern. A peer that still sees the odd value rings once more (a spurious wake-up); a
  // fenced store here waited for the line the peer had just read, on every wake-up.
  /** @internal */
  protected unannounce(): void {
    if (--this.#sleepers === 0 && this.u32.length !== 0) {
      this.#waitSeq = (this.#waitSeq + 1) >>> 0;
      if (!this.detached) this.u32[this.#waitWord] = this.#waitSeq;
    }
  }

}
