import { throwIfAborted } from '../errors.js';
import { forgetAbort, onAbort, pollDelay, type PollingTimes } from './wait.js';

/**
 * The polling strategy's loop without a promise per look: looks once per event-loop turn
 * (`setImmediate`) for `busy` ms, then at timer delays; nothing is announced (a polling end
 * keeps no wait word). Same checks per look as the generic loop: abort, the ring header (`checkLive`),
 * then `ready()`.
 */
export function pollUntil(ready: () => boolean, checkLive: () => void, signal: AbortSignal, since: number, times: PollingTimes): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let immediate: NodeJS.Immediate | undefined;
    const done = (): void => {
      forgetAbort(signal, aborted);
      resolve();
    };
    const failed = (error: unknown): void => {
      forgetAbort(signal, aborted);
      reject(error);
    };
    const aborted = (reason: unknown): void => {
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      reject(reason);
    };
    const look = (): void => {
      timer = immediate = undefined;
      try {
        throwIfAborted(signal);
        checkLive();
        if (ready()) return done();
      } catch (error) {
        return failed(error);
      }
      schedule();
    };
    const schedule = (): void => {
      const idle = performance.now() - since;
      if (idle < times.busy) immediate = setImmediate(look);
      else timer = setTimeout(look, pollDelay(idle, times.busy, times.maxDelay));
    };
    try {
      throwIfAborted(signal);
      checkLive();
      if (ready()) return resolve();
    } catch (error) {
      return reject(error);
    }
    onAbort(signal, aborted);
    schedule();
  });
}
