import type { Device } from '../device/index.js';
import { abortError, fail } from '../errors.js';

/**
 * How one end of a channel sleeps and wakes the other end. The channel calls `wait` only after
 * it has announced that it sleeps in shared memory and looked at the ring once more, and calls
 * `notify` only when the peer announced that it sleeps; spurious wake-ups are harmless (the
 * channel looks again), lost ones are what the protocol rules out.
 */
export interface WaitStrategy {
  /** Wakes the peer end (a doorbell). May do nothing for strategies that poll. */
  notify(): void;
  /**
   * Resolves at the next wake-up (or after a polling delay). `attempt` counts the waits and
   * `since` is the `performance.now()` at which this end began waiting, for back-off. Rejects
   * with the signal's reason on abort.
   */
  wait(signal: AbortSignal | undefined, attempt: number, since: number): Promise<unknown>;
  /**
   * True when `notify` really wakes the peer. Ends that poll keep no "sleeping" flag and never
   * ask the peer to ring.
   */
  readonly wakes: boolean;
  /**
   * What a blocking wait (`receiveSync`, `readySync`, `sendSync`) sleeps on in the kernel.
   * Absent, or an fd of -1: blocking waits spin, then sleep in short steps looking at the ring.
   */
  readonly blocking?: BlockingWake;
}

/** How a thread that blocks (run-to-completion) is woken: see {@link WaitStrategy.blocking}. */
export interface BlockingWake {
  /** The fd that becomes readable when the peer rings this end; -1 when there is none. */
  fd(): number;
  /**
   * Milliseconds after which a sleeping end looks at the ring anyway, as
   * {@link DeviceWaitOptions.recheck} (0: never).
   */
  readonly recheck: number;
  /**
   * Takes the doorbells after a blocking wait found the fd readable, so the next sleep does
   * not return at once for them. Absent: the fd is read(2) directly, which hides those
   * doorbells from anything else in this thread waiting on the same fd.
   */
  readonly drain?: () => void;
}

/** Options of {@link pollingWaitStrategy}. */
export interface PollingOptions {
  /**
   * Milliseconds of looking once per event-loop turn (`setImmediate`) before using timers
   * (default 5). Keep it above `maxDelay`: see {@link pollingWaitStrategy}.
   */
  busy?: number;
  /** Longest delay between two looks at the ring once idle, in milliseconds (default 4). */
  maxDelay?: number;
}

/**
 * Polling: no doorbell. For devices without interrupts (plain files, `sysfs` guests). The
 * waiting end looks once per event-loop turn for `busy` milliseconds, then at timer delays
 * growing with the idle time from 1 ms to `maxDelay`.
 *
 * Why the busy phase outlasts the longest timer: a writer that fills the ring and a reader that
 * empties it wait for each other in turn. If either could fall asleep on a timer before the
 * other's timer fires, both would settle into taking turns sleeping a millisecond each, moving
 * one ring's worth per turn; a busy phase longer than any timer always catches the other end.
 */
export function pollingWaitStrategy(options: PollingOptions = {}): WaitStrategy {
  checkKeys('pollingWaitStrategy', options, POLLING_KEYS);
  const maxDelay = options.maxDelay ?? 4;
  const busy = options.busy ?? Math.max(5, maxDelay + 1);
  const strategy: WaitStrategy & { [POLLING]: PollingTimes } = {
    wakes: false,
    notify() {},
    wait(signal, _attempt, since) {
      if (signal?.aborted) return Promise.reject(abortError(signal.reason));
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        let immediate: NodeJS.Immediate | undefined;
        const aborted = (): void => {
          if (timer) clearTimeout(timer);
          else clearImmediate(immediate!);
          reject(abortError(signal!.reason));
        };
        const done = (): void => {
          signal?.removeEventListener('abort', aborted);
          resolve(undefined);
        };
        const idle = performance.now() - since;
        if (idle < busy) immediate = setImmediate(done);
        else timer = setTimeout(done, pollDelay(idle, busy, maxDelay));
        signal?.addEventListener('abort', aborted, { once: true });
      });
    },
    [POLLING]: { busy, maxDelay },
  };
  return strategy;
}

/** @internal The polling strategy's timing, for ends that run its loop themselves. */
export interface PollingTimes {
  busy: number;
  maxDelay: number;
}

/**
 * @internal Marks {@link pollingWaitStrategy}: a channel end that finds it runs the polling
 * loop itself, with one promise and one abort listener per wait instead of per look (each look
 * is an event-loop turn; the garbage of a promise and a listener per turn made the collector run
 * every few milliseconds, and on two cores its helper threads stall the other end).
 */
export const POLLING = Symbol('ivshmem.polling');

/**
 * @internal Marks {@link deviceWaitStrategy}: a channel end that finds it parks one persistent
 * wake callback while it sleeps and is called straight from the interrupt listener, instead of
 * a promise, three closures, an abort registration and a re-check timer per wait (measured: the
 * per-wait work cost more CPU than the wake-up itself). `park` starts listening if needed;
 * the callback is also called on device close and every `recheck` ms while parked.
 */
export const DIRECT = Symbol('ivshmem.direct');

/** @internal See {@link DIRECT}. */
export interface DirectWake {
  park(wake: () => void): void;
  unpark(wake: () => void): void;
}

/** @internal Milliseconds until the next look after `idle` ms of polling past `busy`. */
export function pollDelay(idle: number, busy: number, maxDelay: number): number {
  return Math.min(maxDelay, Math.max(1, (idle - busy) / 4));
}

/** The part of a {@link Device} the doorbell strategy needs (`vectors`, when known, is checked). */
export type DoorbellDevice = Pick<Device, 'ring' | 'on' | 'off'> & Partial<Pick<Device, 'vectors' | 'interruptFd' | 'takeInterrupts'>>;

/** Options of {@link deviceWaitStrategy}. */
export interface DeviceWaitOptions {
  /** The peer whose doorbell `notify` rings (the other end of the channel). */
  peer: number;
  /** The vector rung on the peer and waited on here (default 0). */
  vector?: number;
  /**
   * Milliseconds after which a sleeping end looks at the ring anyway (default 1000; 0 never).
   * ivshmem drops doorbells silently (before setup completes, after migration, to a guest
   * without MSI-X), and a hostile peer may never ring: this bounds both to a delay.
   */
  recheck?: number;
}

/**
 * Doorbells: `notify` rings `peer` on `vector`, `wait` waits for this device's interrupt on
 * `vector`. Both ends of a channel use the same vector number, each on its own device.
 * Several channels may share a vector: a wake-up meant for another one is just spurious.
 *
 * @example
 * ```ts
 * const wait = deviceWaitStrategy(device, { peer: 1, vector: 0 });
 * const writer = new ChannelWriter(device.memory, { offset: 0, size: ringSize(1 << 16), wait, format: true });
 * ```
 */
export function deviceWaitStrategy(device: DoorbellDevice, options: DeviceWaitOptions): WaitStrategy {
  checkKeys('deviceWaitStrategy', options, DEVICE_KEYS);
  const { peer } = options;
  const vector = options.vector ?? 0;
  const recheck = options.recheck ?? 1000;
  const vectors = device.vectors;
  if (vectors === 0) fail('ERR_IVSHMEM_NO_DOORBELL', 'deviceWaitStrategy(): the device has no doorbell (a plain file?): use pollingWaitStrategy()');
  if (!Number.isInteger(peer) || peer < 0 || peer > 0xffff) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `deviceWaitStrategy(): peer must be an ivshmem peer ID 0..65535, got ${String(peer)}`);
  }
  if (!Number.isInteger(vector) || vector < 0 || vector > 255 || (vectors !== undefined && vector >= vectors)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `deviceWaitStrategy(): vector must be an integer 0..${vectors === undefined ? 255 : vectors - 1}, got ${String(vector)}`);
  }
  if (typeof recheck !== 'number' || !(recheck >= 0 && recheck <= 0x7fffffff)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `deviceWaitStrategy(): recheck must be a number of milliseconds 0..2147483647 (0: never), got ${String(recheck)}`);
  }
  // One 'interrupt' listener kept while waits keep coming, instead of waitInterrupt(): that
  // starts and stops watching the eventfd on every wait, a cost paid on every wake-up. The
  // listener goes after LINGER ms without waits, so an idle channel does not keep the process
  // alive. Attaching it starts the watch before the next I/O poll, and eventfds stay readable
  // until drained: a doorbell that came before the wait still wakes it.
  const waiters = new Set<() => void>();
  let listening = false;
  let lastWait = 0;
  let waits = 0; // parks since the idle check last looked: cheaper than a clock read per wait
  let idle: NodeJS.Timeout | null = null;
  let ticker: NodeJS.Timeout | null = null;
  // A wake removes itself from the set, which a Set's iteration allows; nothing is added
  // synchronously (promise continuations run later).
  const onInterrupt = (v: number): void => {
    if (v !== vector) return;
    for (const wake of waiters) wake();
  };
  const onClose = (): void => {
    for (const wake of waiters) wake();
  };
  const stopListening = (): void => {
    if (waiters.size > 0 || waits > 0 || performance.now() - lastWait < LINGER) {
      waits = 0;
      idle!.refresh();
      return;
    }
    listening = false;
    device.off('interrupt', onInterrupt);
    device.off('close', onClose);
    if (ticker) clearInterval(ticker);
    ticker = null;
  };
  const listen = (): void => {
    listening = true;
    device.on('interrupt', onInterrupt);
    device.on('close', onClose);
    if (idle) idle.refresh();
    else (idle = setTimeout(stopListening, LINGER)).unref();
  };
  // Parked ends look at their rings every `recheck` ms: one timer for all of them, for as long
  // as the listener stays, not one per wait.
  const direct: DirectWake = {
    park(wake) {
      waits++;
      if (!listening) listen();
      if (recheck > 0 && !ticker) (ticker = setInterval(onClose, recheck)).unref();
      waiters.add(wake);
    },
    unpark(wake) {
      waiters.delete(wake);
    },
  };
  const strategy: WaitStrategy & { [DIRECT]: DirectWake } = {
    [DIRECT]: direct,
    wakes: true,
    notify: () => device.ring(peer, vector),
    blocking: {
      fd: () => device.interruptFd?.(vector) ?? -1,
      recheck,
      // Through the device: the doorbell may also be for an asynchronous end parked on this
      // vector in this thread (a send waiting for space, a bus channel), which it passes on.
      drain: device.takeInterrupts && (() => void device.takeInterrupts!(vector)),
    },
    wait(signal) {
      if (signal?.aborted) return Promise.reject(abortError(signal.reason));
      lastWait = performance.now();
      if (!listening) listen();
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const settle = (): void => {
          waiters.delete(wake);
          if (timer) clearTimeout(timer);
          if (signal) forgetAbort(signal, aborted);
        };
        const wake = (): void => {
          settle();
          resolve(undefined);
        };
        const aborted = (reason: unknown): void => {
          settle();
          reject(reason);
        };
        waiters.add(wake);
        if (recheck > 0) timer = setTimeout(wake, recheck);
        if (signal) onAbort(signal, aborted);
      });
    },
  };
  return strategy;
}

const LINGER = 100;

const DEVICE_KEYS = ['peer', 'vector', 'recheck'];
const POLLING_KEYS = ['busy', 'maxDelay'];

// An option the strategy does not know was meant for something else (a channel's `spin`, say):
// ignoring it would leave the caller measuring a setting that never applied.
function checkKeys(what: string, options: object, known: readonly string[]): void {
  if (typeof options !== 'object' || options === null) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what}(): options must be an object`);
  for (const key in options) {
    if (known.includes(key)) continue;
    const hint = key === 'spin' ? ` ('spin' is a channel option: new ChannelReader(memory, { wait, spin }))` : '';
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what}(): unknown option '${key}' (known: ${known.join(', ')})${hint}`);
  }
}

/**
 * @internal Abort callbacks per signal, with one 'abort' listener per signal instead of an
 * addEventListener/removeEventListener pair per wait: a channel end passes the same signal to
 * every wait, and EventTarget listeners cost microseconds (and garbage) per wake-up.
 */
const aborts = new WeakMap<AbortSignal, Set<(reason: unknown) => void>>();

/** @internal Calls `callback(reason)` when `signal` aborts, until {@link forgetAbort}. */
export function onAbort(signal: AbortSignal, callback: (reason: unknown) => void): void {
  let callbacks = aborts.get(signal);
  if (!callbacks) {
    const set = new Set<(reason: unknown) => void>();
    callbacks = set;
    aborts.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        const reason = abortError(signal.reason);
        for (const call of set) call(reason);
        set.clear();
      },
      { once: true },
    );
  }
  callbacks.add(callback);
}

/** @internal */
export function forgetAbort(signal: AbortSignal, callback: (reason: unknown) => void): void {
  aborts.get(signal)?.delete(callback);
}

/** @internal True for an object that can be a channel end's {@link WaitStrategy}. */
export function isWaitStrategy(value: unknown): value is WaitStrategy {
  const s = value as WaitStrategy | null;
  return typeof s === 'object' && s !== null && typeof s.notify === 'function' && typeof s.wait === 'function' && typeof s.wakes === 'boolean';
}
