import { DOORBELL_BURST, DOORBELL_EVERY_MS } from './layout.js';

/**
 * SPEC 2.7's limit on the doorbells one end rings: a token bucket, and the one doorbell over
 * the limit that is sent later instead (`ring`, from a timer). Owned by the end that rings.
 */
export class DoorbellLimit {
  #tokens = DOORBELL_BURST;
  #refilled = 0;
  #deferred: NodeJS.Timeout | null = null;
  #deferredForce = false;
  readonly #ring: (force: boolean) => void;

  /** `ring`: sends a deferred doorbell (`force`: one that was forced) once its timer fires. */
  constructor(ring: (force: boolean) => void) {
    this.#ring = ring;
  }

  /** True when a deferred doorbell waits for its timer. */
  get pending(): boolean {
    return this.#deferred !== null;
  }

  // Takes a doorbell token; the clock is read only when the bucket is full or empty.
  take(): boolean {
    if (this.#tokens === DOORBELL_BURST) this.#refilled = performance.now();
    else if (this.#tokens < 1) {
      const now = performance.now();
      this.#tokens = Math.min(DOORBELL_BURST, this.#tokens + (now - this.#refilled) / DOORBELL_EVERY_MS);
      this.#refilled = now;
      if (this.#tokens < 1) return false;
    }
    this.#tokens--;
    return true;
  }

  // A doorbell over the limit is sent later, not dropped: an honest sleeper only waits longer.
  defer(force: boolean): void {
    this.#deferredForce ||= force;
    if (this.#deferred) return;
    this.#deferred = setTimeout(() => {
      this.#deferred = null;
      const again = this.#deferredForce;
      this.#deferredForce = false;
      this.#ring(again);
    }, 1);
  }

  /**
   * Takes back the deferred doorbell, for the caller to send now (a blocking thread runs no
   * timers): null when none is pending, else whether it was forced.
   */
  cancel(): boolean | null {
    if (!this.#deferred) return null;
    clearTimeout(this.#deferred);
    this.#deferred = null;
    const force = this.#deferredForce;
    this.#deferredForce = false;
    return force;
  }
}
