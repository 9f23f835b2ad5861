import { native } from '../native.js';

/**
 * An fd shared by the messages queued to send it: closed only when its owner let go and no
 * queued message still needs it. Otherwise a queued message could carry a reused fd number,
 * that is, somebody else's file.
 */
export class FdRef {
  readonly fd: number;
  #refs = 1;

  constructor(fd: number) {
    this.fd = fd;
  }

  retain(): this {
    this.#refs++;
    return this;
  }

  release(): void {
    if (--this.#refs === 0) native.close(this.fd);
  }
}
