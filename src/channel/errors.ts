import { IvshmemError, type IvshmemErrorCode } from '../errors.js';

/** Shared-memory fields a {@link ChannelError} can blame. */
export type RingField =
  | 'magic'
  | 'version'
  | 'headerSize'
  | 'capacity'
  | 'flags'
  | 'tail'
  | 'head'
  | 'length'
  | 'type'
  | 'padding';

/**
 * A channel failure. `ERR_IVSHMEM_CHANNEL_CORRUPT` names the shared field that broke the ring's
 * rules in {@link ChannelError.field}; once raised, the channel stays failed and every later call
 * throws the same error.
 */
export class ChannelError extends IvshmemError {
  /** The shared-memory field whose value broke the ring's rules (corruption only). */
  readonly field?: RingField;

  constructor(code: IvshmemErrorCode, message: string, field?: RingField, cause?: unknown) {
    super(message, cause === undefined ? { code } : { code, cause });
    this.name = 'ChannelError';
    if (field !== undefined) this.field = field;
  }
}

/** @internal */
export function corrupt(field: RingField, message: string): ChannelError {
  return new ChannelError('ERR_IVSHMEM_CHANNEL_CORRUPT', `Channel corrupt (${field}): ${message}`, field);
}
