import { Duplex, Readable, Writable } from 'node:stream';
import { fail } from '../errors.js';
import { corrupt } from './errors.js';
import type { ChannelReader } from './reader.js';
import type { ChannelWriter } from './writer.js';

/**
 * Record type of the bytes a stream carries. A record of any other type fails the readable
 * side with `ERR_IVSHMEM_CHANNEL_CORRUPT` naming the type: the channel is not a byte stream.
 * A writable side destroyed with an error closes the channel as failed (writer-closed = 2,
 * SPEC 2.8), which needs no ring space; the readable side then fails with
 * `ERR_IVSHMEM_CHANNEL_ABORTED` after the bytes sent before, so a cut transfer is never taken
 * for a complete one.
 */
export const STREAM_DATA = 0;

/** Options of the stream adapters. */
export interface ChannelStreamOptions {
  /** The stream's buffer in bytes (Node's `highWaterMark`; default Node's). */
  highWaterMark?: number;
  /**
   * Largest message a written chunk is cut into (default and maximum: the ring's
   * `maxMessageSize`). Smaller messages let the reader start on a chunk sooner.
   */
  maxMessageSize?: number;
}

// The readable half: pulls records while Node wants data, waits on the ring when it is empty.
function readSide(reader: ChannelReader<Uint8Array>) {
  let pulling = false;
  let foreign = -1;
  const chunks: Buffer[] = [];
  // Copies, checked by drain() after the callback, are pushed only once drain() returns.
  const take = (data: Uint8Array, offset: number, length: number, type: number): void => {
    if (type === STREAM_DATA) {
      if (length > 0) chunks.push(Buffer.from(data.subarray(offset, offset + length)));
    } else if (foreign < 0) {
      foreign = type;
    }
  };
  // Node calls read() when it wants data, also from inside push(): `demand` remembers a call
  // that came while we were pulling, so that no request is lost and the stream never stalls.
  let demand = false;
  const pull = async (stream: Readable): Promise<void> => {
    pulling = true;
    try {
      while (demand) {
        reader.drain(take, 64);
        if (foreign >= 0) throw corrupt('type', `stream: a record of type ${foreign} in a byte stream (only type ${STREAM_DATA} is the stream's)`);
        if (chunks.length === 0) {
          if (!(await reader.ready())) {
            stream.push(null);
            return;
          }
          continue;
        }
        demand = false;
        let more = false;
        for (const chunk of chunks.splice(0)) more = stream.push(chunk);
        if (more) demand = true;
      }
    } catch (error) {
      stream.destroy(error as Error);
    } finally {
      pulling = false;
    }
  };
  return {
    read(this: Readable): void {
      demand = true;
      if (!pulling) void pull(this);
    },
  };
}

// The writable half: cuts chunks into messages and waits for ring space (backpressure).
function writeSide(writer: ChannelWriter<Uint8Array>, options: ChannelStreamOptions) {
  const max = Math.min(options.maxMessageSize ?? writer.maxMessageSize, writer.maxMessageSize);
  if (!Number.isInteger(max) || max < 1) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `stream: maxMessageSize must be a positive integer, got ${String(options.maxMessageSize)}`);
  }
  const send = async (chunk: Uint8Array): Promise<void> => {
    for (let at = 0; at < chunk.length; at += max) {
      const piece = chunk.subarray(at, Math.min(at + max, chunk.length));
      // The ring copies the bytes at once when there is room: no need to wait on a settled send.
      if (!writer.trySend(piece)) await writer.send(piece);
    }
  };
  return {
    write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
      send(chunk).then(() => done(), done);
    },
    final(done: (error?: Error | null) => void): void {
      writer.close();
      done();
    },
    end(error: Error | null): void {
      writer.close({ error: error != null });
    },
  };
}

/**
 * A `Readable` of a byte channel: each message becomes a chunk, EOF ends the stream. It reads
 * only while its buffer has room, so a slow consumer leaves the data in the ring and the writer
 * waits (backpressure). Destroying the stream closes the reader.
 */
export function channelReadable(reader: ChannelReader<Uint8Array>, options: ChannelStreamOptions = {}): Readable {
  const side = readSide(reader);
  return new Readable({
    highWaterMark: options.highWaterMark,
    read: side.read,
    destroy(error, done) {
      reader.close();
      done(error);
    },
  });
}

/**
 * A `Writable` into a byte channel: chunks are cut into messages of at most the ring's
 * `maxMessageSize`; a write completes once the ring took it, so `write()` returns false while
 * the reader lags (backpressure). `end()` closes the channel (the reader sees EOF); destroying
 * the stream with an error closes the channel as failed (the reader fails instead of ending).
 */
export function channelWritable(writer: ChannelWriter<Uint8Array>, options: ChannelStreamOptions = {}): Writable {
  const side = writeSide(writer, options);
  return new Writable({
    highWaterMark: options.highWaterMark,
    write: side.write,
    final: side.final,
    destroy(error, done) {
      side.end(error);
      done(error);
    },
  });
}

/**
 * A `Duplex` over a channel pair: bytes written go out on `writer`, bytes read come from
 * `reader`, each half as {@link channelWritable} and {@link channelReadable}. Ending the
 * writable half closes `writer`; the readable half ends at `reader`'s EOF.
 */
export function channelDuplex(pair: { reader: ChannelReader<Uint8Array>; writer: ChannelWriter<Uint8Array> }, options: ChannelStreamOptions = {}): Duplex {
  const read = readSide(pair.reader);
  const write = writeSide(pair.writer, options);
  return new Duplex({
    highWaterMark: options.highWaterMark,
    read: read.read,
    write: write.write,
    final: write.final,
    destroy(error, done) {
      write.end(error);
      pair.reader.close();
      done(error);
    },
  });
}
