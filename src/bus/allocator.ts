// This peer's own section: where the rings of the channels it opens live (first fit, reclaimed
// once our writer closed and the reader is done, or the destination is gone), and its directory of them.
import { ChannelError, isRingCapacity, ringEnds, RING_MAX_CAPACITY, RING_MIN_CAPACITY, type ChannelWriter } from '../channel/index.js';
import { fail, ivshmemError } from '../errors.js';
import { ENTRY_STATE } from './layout.js';
import { ringArea } from './region.js';
import { setEntryState, storeDirectoryGeneration, writeEntry } from './slots.js';
import { samePeer, type BusContext, type BusPeer } from './types.js';

/** A channel this peer opened: its directory entry and its ring in our section. */
export interface Outgoing {
  entry: number;
  serial: number;
  offset: number;
  size: number;
  to: BusPeer;
  writer: ChannelWriter<unknown>;
}

/** Refuses a ring capacity the channel layer would refuse, naming the option. */
export function checkCapacity(capacity: number, what: string): void {
  if (!isRingCapacity(capacity)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what} must be a power of two from ${RING_MIN_CAPACITY} to 2^${Math.log2(RING_MAX_CAPACITY)} bytes, got ${String(capacity)}`);
  }
}

function align128(n: number): number {
  return Math.ceil(n / 128) * 128;
}

/** Our section's rings and directory entries. Only this peer writes them. */
export class SectionAllocator {
  readonly #ctx: BusContext;
  readonly #outgoing = new Map<number, Outgoing>();
  #serial = 0;
  #generation = 0;

  constructor(ctx: BusContext) {
    this.#ctx = ctx;
  }

  /** The channels this peer opened and has not reclaimed. */
  values(): IterableIterator<Outgoing> {
    return this.#outgoing.values();
  }

  /**
   * First fit for a `size`-byte ring and a free entry; channels our writer closed whose reader is
   * done (or whose destination is no longer `isUp`, or whose writer failed) are reclaimed first.
   */
  allocate(size: number, isUp: (peer: BusPeer) => boolean): { entry: number; offset: number } {
    this.#reclaim(isUp);
    const { geometry, self } = this.#ctx;
    let entry = -1;
    for (let e = 0; e < geometry.entries; e++) {
      if (!this.#outgoing.has(e)) {
        entry = e;
        break;
      }
    }
    const [start, end] = ringArea(geometry, self.slot);
    const used = [...this.#outgoing.values()].sort((a, b) => a.offset - b.offset);
    let offset = start;
    for (const u of used) {
      if (u.offset - offset >= size) break;
      offset = Math.max(offset, align128(u.offset + u.size));
    }
    if (entry < 0 || offset + size > end) {
      throw ivshmemError(
        'ERR_IVSHMEM_BUS_FULL',
        entry < 0
          ? `all ${geometry.entries} channel entries of this peer are in use: close channels first`
          : `no room for a ${size}-byte ring in this peer's ${geometry.sectionSize}-byte section: close channels, use a smaller capacity, or format the region for fewer peers`,
      );
    }
    return { entry, offset };
  }

  /** Publishes the entry of a channel whose ring is formatted at `offset`, and records it. */
  publish(place: { entry: number; offset: number; size: number }, to: BusPeer, vector: number, name: string, writer: ChannelWriter<unknown>): void {
    const { memory, geometry, self } = this.#ctx;
    const serial = (this.#serial = (this.#serial + 1) >>> 0);
    writeEntry(memory, geometry, self.slot, place.entry, {
      serial,
      destinationSlot: to.slot,
      destinationSession: to.session,
      ringOffset: place.offset,
      ringSize: place.size,
      vector,
      name,
    });
    this.#outgoing.set(place.entry, { entry: place.entry, serial, offset: place.offset, size: place.size, to, writer });
    storeDirectoryGeneration(memory, geometry, self.slot, (this.#generation = (this.#generation + 1) >>> 0));
  }

  /** Closes every writer and marks its entry closed: readers elsewhere see EOF after what was sent. */
  closeAll(): void {
    const { memory, geometry, self } = this.#ctx;
    for (const out of this.#outgoing.values()) {
      out.writer.close();
      setEntryState(memory, geometry, self.slot, out.entry, ENTRY_STATE.closed);
    }
  }

  /** Ends the writers of channels to `peer` (or all of them) with `error`. */
  abandon(error: ChannelError, peer?: BusPeer): void {
    for (const out of this.#outgoing.values()) {
      if (!peer || samePeer(out.to, peer)) out.writer.abandon(error);
    }
  }

  #reclaim(isUp: (peer: BusPeer) => boolean): void {
    const { memory, geometry, self } = this.#ctx;
    for (const [e, out] of this.#outgoing) {
      // Our writer's own state, not the shared writer-closed word: any peer can store that, and
      // freeing a ring our writer still uses would put it under the next channel's ring.
      const done = out.writer.closed && ringEnds(memory, out.offset).readerClosed;
      if (!isUp(out.to) || done || out.writer.failure) {
        // The writer stops touching the bytes before they can become another ring.
        if (out.writer.closed) out.writer.detach();
        else out.writer.abandon(new ChannelError('ERR_IVSHMEM_CHANNEL_CLOSED', 'channel: its ring was reclaimed (the reader is gone or the channel failed)'));
        setEntryState(memory, geometry, self.slot, e, ENTRY_STATE.free);
        this.#outgoing.delete(e);
      }
    }
  }
}
