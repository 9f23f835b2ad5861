/** A lab failure: a missing tool, a failed preparation step, a guest that could not be started. */
export class LabError extends Error {
  /** The guest's console log (serial port), when a guest was involved. */
  readonly console?: string;

  constructor(message: string, options: { cause?: unknown; console?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LabError';
    if (options.console !== undefined) this.console = options.console;
  }
}
