import { IvshmemError } from '../errors.js';

/**
 * A lab failure (code `ERR_IVSHMEM_LAB`): a missing tool, a failed preparation step, a guest that
 * could not be started.
 */
export class LabError extends IvshmemError {
  /** The guest's console log (serial port), when a guest was involved. */
  readonly console?: string;

  constructor(message: string, options: { cause?: unknown; console?: string } = {}) {
    super(message, options.cause === undefined ? { code: 'ERR_IVSHMEM_LAB' } : { code: 'ERR_IVSHMEM_LAB', cause: options.cause });
    this.name = 'LabError';
    if (options.console !== undefined) this.console = options.console;
  }
}
