import { fail } from '../errors.js';
import { native } from '../native.js';
import { ChannelError } from './errors.js';
import { W_HEAD_LO } from './layout.js';
import { RingEnd } from './ring.js';

/** Options of the blocking (run-to-completion) calls: `receiveSync`, `readySync`, `sendSync`. */
export interface BlockingOptions {
  /** Milliseconds to wait at most (default: no limit); then `ERR_IVSHMEM_TIMEOUT`. */
  timeout?: number;
  /**
   * Microseconds to spin on the ring before sleeping in the kernel (default: the channel's
   * `spin`; at most one second is spun, whatever the value). A thread that owns a core can
   * afford more: a spin that catches the reply saves the wake-up, the largest cost of a round
   * trip.
   */
  spin?: number;
}

// Longest sleep of a blocking end over a SharedArrayBuffer before it looks again: bounds how
// late it sees a close that raced its going to sleep (a close moves no position to wait on).
const SHARED_NAP_MS = 5;
// The longest spin of a blocking call (the addon caps it too): past it, sleeping is cheaper.
const MAX_SPIN_MS = 1000;
// The longest single sleep of a blocking call, which then looks and sleeps again: in
// nanoseconds it stays below 2^53, which the addon takes exactly.
const MAX_SLEEP_MS = 0x7fffffff;

const BLOCKING_KEYS = new Set(['timeout', 'spin']);

function blockingOptions(options: BlockingOptions | undefined, defaultSpin: number, send: boolean): { timeout: number; spin: number } {
  if (options === undefined) return { timeout: Infinity, spin: defaultSpin };
  for (const key in options) {
    if (!BLOCKING_KEYS.has(key) && !(send && key === 'type')) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: unknown option '${key}' (known: timeout, spin${send ? ', type' : ''})`);
    }
  }
  const timeout = options.timeout ?? Infinity;
  if (!(timeout >= 0)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: timeout must be a number of milliseconds >= 0, got ${String(options.timeout)}`);
  const spin = options.spin ?? defaultSpin;
  if (!(spin >= 0 && spin !== Infinity)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: spin must be a finite number of microseconds >= 0, got ${String(options.spin)}`);
  return { timeout, spin };
}

/** @internal The error a blocking call throws when its timeout passed. */
export function timedOut(what: string, timeout: number | undefined): ChannelError {
  return new ChannelError('ERR_IVSHMEM_TIMEOUT', `channel: ${what} timed out after ${String(timeout)} ms`);
}

/**
 * An end with the blocking (run-to-completion) waits, for a thread that owns its data path: the
 * shared state and the async sleep are {@link RingEnd}'s. @hidden
 */
export abstract class BlockingEnd<T> extends RingEnd<T> {
  /** @internal Validates the options of a blocking call (also on its fast path). */
  protected blockingOptions(options: BlockingOptions | undefined, send = false): { timeout: number; spin: number } {
    return blockingOptions(options, this.spin * 1000, send);
  }

  /**
   * @internal The blocking form of {@link RingEnd.until}, for a thread that owns its data path:
   * returns true once `ready()` is, false when `options.timeout` passed first. Spins on
   * `word` (the other end's position: it changes when there is something to look at) for
   * `spin` µs in native code, then announces sleep, looks once more (seq-cst), and sleeps in
   * the kernel on the strategy's fd until a doorbell, the timeout, or the re-check period
   * (dropped doorbells). Without an fd it sleeps in growing steps (50 µs to 1 ms), looking at
   * the ring after each. The event loop does not run meanwhile.
   */
  protected untilSync(ready: () => boolean, word: number, options: BlockingOptions | undefined): boolean {
    const { timeout, spin } = this.blockingOptions(options, word === W_HEAD_LO);
    // The word is read before each look: a move after the look ends the wait that follows.
    let observed = Atomics.load(this.u32, word);
    if (ready()) return true;
    const deadline = timeout === Infinity ? Infinity : performance.now() + timeout;
    if (this.shared !== null) return this.#untilShared(ready, word, spin, deadline);
    const memory = this.u32.buffer as ArrayBuffer;
    const at = this.u32.byteOffset + word * 4;
    const blocking = this.strategy.blocking;
    if (blocking && !(typeof blocking.recheck === 'number' && blocking.recheck >= 0 && blocking.recheck <= 0x7fffffff)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel: the wait strategy's blocking.recheck must be a number of milliseconds 0..2147483647 (0: never), got ${String(blocking.recheck)}`);
    }
    // The spin: one native call that returns as soon as the word moves.
    if (spin > 0) {
      this.ringDeferred();
      const spinMs = Math.min(spin / 1000, MAX_SPIN_MS, deadline - performance.now());
      if (spinMs > 0 && native.waitWord(memory, at, observed, -1, Math.round(spinMs * 1e6), Math.round(spinMs * 1e6)) !== 0) {
        if (ready()) return true;
      }
    }
    let nap = 0.05;
    for (;;) {
      this.checkLive();
      const fd = blocking ? blocking.fd() : -1;
      const left = deadline - performance.now();
      if (left <= 0) return ready();
      // A doorbell the limit held back must still go out: no timer runs while this blocks.
      const retry = this.ringDeferred();
      if (fd < 0) {
        // Nothing rings this end: look, sleep a little, look (a polling end keeps no wait word).
        observed = Atomics.load(this.u32, word);
        if (this.strictly(ready)) return true;
        native.waitWord(memory, at, observed, -1, 0, Math.round(Math.min(nap, left, retry < 0 ? Infinity : retry) * 1e6));
        nap = Math.min(1, nap * 2);
        if (ready()) return true;
        continue;
      }
      const recheck = blocking!.recheck > 0 ? blocking!.recheck : Infinity;
      // At most MAX_SLEEP_MS per sleep: nanoseconds of more than ~104 days are past 2^53.
      const sleep = Math.min(left, recheck, MAX_SLEEP_MS, retry < 0 ? Infinity : retry);
      this.announce();
      let woke: number;
      try {
        observed = Atomics.load(this.u32, word);
        if (this.strictly(ready)) return true;
        woke = native.waitWord(memory, at, observed, fd, 0, Math.round(sleep * 1e6));
      } finally {
        this.unannounce();
      }
      // The doorbell is consumed here, so the next sleep does not return at once for it.
      if ((woke & native.WAIT_READABLE) !== 0) {
        if (blocking!.drain) blocking!.drain();
        else native.eventfdDrain(fd);
      }
      if (this.strictly(ready)) return true;
    }
  }

  /**
   * {@link BlockingEnd.untilSync} over a SharedArrayBuffer, whose peer is another thread of this
   * process: spins in JavaScript, then sleeps in Atomics.wait on `word`, which the other end
   * notifies on every publish and close (see {@link RingEnd.wake}). A wait compares the word
   * atomically with going to sleep, so a publish is never missed; a close changes no position,
   * and one that lands between the look and the wait is seen at the next look: each sleep is
   * capped at SHARED_NAP_MS for that.
   */
  #untilShared(ready: () => boolean, word: number, spin: number, deadline: number): boolean {
    const shared = this.shared!;
    if (spin > 0) {
      this.ringDeferred();
      const end = Math.min(deadline, performance.now() + Math.min(spin / 1000, MAX_SPIN_MS));
      let observed = Atomics.load(shared, word);
      for (let i = 0; ; i++) {
        const now = Atomics.load(shared, word);
        if (now !== observed) {
          if (ready()) return true;
          observed = now;
        }
        if ((i & 63) === 63 && performance.now() >= end) break;
      }
    }
    for (;;) {
      this.checkLive();
      const left = deadline - performance.now();
      if (left <= 0) return ready();
      const retry = this.ringDeferred();
      const observed = Atomics.load(shared, word);
      if (this.strictly(ready)) return true;
      Atomics.wait(shared, word, observed, Math.min(left, SHARED_NAP_MS, retry < 0 ? Infinity : retry));
    }
  }
}
