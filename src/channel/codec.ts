import { Buffer } from 'node:buffer';

/**
 * Turns values into record payloads and back.
 *
 * A codec implements either `encode` (simple: returns the payload) or `maxSize` plus
 * `encodeInto` (no allocation: writes straight into the ring). The writer prefers `encodeInto`.
 * Offsets are passed instead of sub-views because creating a view per message is an allocation.
 *
 * @example
 * ```ts
 * // Fixed-layout records, no allocation on either side:
 * const point: Codec<{ x: number; y: number }> = {
 *   maxSize: () => 16,
 *   encodeInto(p, target, offset) {
 *     const view = new DataView(target.buffer, target.byteOffset); // cache this in real code
 *     view.setFloat64(offset, p.x, true);
 *     view.setFloat64(offset + 8, p.y, true);
 *     return 16;
 *   },
 *   decode(bytes, offset) {
 *     const view = new DataView(bytes.buffer, bytes.byteOffset);
 *     return { x: view.getFloat64(offset, true), y: view.getFloat64(offset + 8, true) };
 *   },
 * };
 * ```
 */
export interface Codec<T> {
  /** A name for error messages. */
  readonly name?: string;
  /** Returns the payload of `value`. Used when `encodeInto` is absent. */
  encode?(value: T): Uint8Array;
  /** An upper bound of the payload size of `value`; required with `encodeInto`. */
  maxSize?(value: T): number;
  /**
   * Writes the payload of `value` at `target[offset]`, at most `maxSize(value)` bytes, and
   * returns how many it wrote. `target` is a Node `Buffer` over the ring's whole data area:
   * writing outside `[offset, offset + maxSize(value))` corrupts the channel.
   */
  encodeInto?(value: T, target: Uint8Array, offset: number): number;
  /**
   * Returns the value of the payload `bytes[offset .. offset + length)`. `bytes` is a Node
   * `Buffer` over shared memory: copy what you keep, because the peer reuses the space once
   * `decode` returns.
   */
  decode(bytes: Uint8Array, offset: number, length: number, type: number): T;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Worst case is 3 bytes per UTF-16 unit; for long strings counting beats over-reserving
// (an over-reserve could exceed the ring when the real payload fits).
function utf8MaxSize(text: string): number {
  return text.length <= 4096 ? text.length * 3 : Buffer.byteLength(text, 'utf8');
}

function utf8Write(text: string, target: Uint8Array, offset: number, max: number): number {
  if (Buffer.isBuffer(target)) return target.write(text, offset, max, 'utf8');
  return encoder.encodeInto(text, target.subarray(offset, offset + max)).written;
}

function utf8Read(bytes: Uint8Array, offset: number, length: number): string {
  if (Buffer.isBuffer(bytes)) return bytes.toString('utf8', offset, offset + length);
  return decoder.decode(bytes.subarray(offset, offset + length));
}

/** Payloads as they are: `Uint8Array` in, a fresh copy (`Uint8Array`) out. */
export const bytesCodec: Codec<Uint8Array> = {
  name: 'bytes',
  maxSize: (value) => value.byteLength,
  encodeInto(value, target, offset) {
    target.set(value, offset);
    return value.byteLength;
  },
  decode(bytes, offset, length) {
    // ArrayBuffer.prototype.slice on a mapped buffer is ~10x slower than allocate-and-set.
    const copy = new Uint8Array(length);
    copy.set(new Uint8Array(bytes.buffer, bytes.byteOffset + offset, length));
    return copy;
  },
};

/** Strings as UTF-8 (lone surrogates become U+FFFD). */
export const utf8Codec: Codec<string> = {
  name: 'utf8',
  maxSize: utf8MaxSize,
  encodeInto: (value, target, offset) => utf8Write(value, target, offset, utf8MaxSize(value)),
  decode: utf8Read,
};

/**
 * JSON values as UTF-8 text. `undefined`, functions and symbols have no JSON form and are
 * refused with a `TypeError`.
 */
export function jsonCodec<T = unknown>(): Codec<T> {
  // maxSize() and encodeInto() are called back to back for one value: stringify once. maxSize
  // always stringifies afresh, so an object changed between two sends is never sent stale.
  let pending: unknown;
  let pendingText: string | null = null;
  const stringify = (value: unknown): string => {
    const json = JSON.stringify(value) as string | undefined;
    if (json === undefined) throw new TypeError(`json codec: ${typeof value} has no JSON form`);
    return json;
  };
  return {
    name: 'json',
    maxSize(value) {
      pending = value;
      pendingText = stringify(value);
      return utf8MaxSize(pendingText);
    },
    encodeInto(value, target, offset) {
      const json = pendingText !== null && pending === value ? pendingText : stringify(value);
      pending = undefined;
      pendingText = null;
      return utf8Write(json, target, offset, utf8MaxSize(json));
    },
    decode: (bytes, offset, length) => JSON.parse(utf8Read(bytes, offset, length)) as T,
  };
}
