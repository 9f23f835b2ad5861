// The channel directory as seen from the receiving side: other peers' entries addressed to us,
// offered once each to an accept() waiter or the `channel` event, and the readers we took.
import { ChannelError, ChannelReader, failedReader, ringEnds, RING_HEADER_SIZE, RING_MIN_CAPACITY, type Codec } from '../channel/index.js';
import { abortError, fail } from '../errors.js';
import { ENTRY_STATE } from './layout.js';
import { readEntry, slotOwner, type EntryCopy } from './slots.js';
import { samePeer, type BusContext, type BusPeer, type IncomingChannel, type PeerDownReason } from './types.js';
import type { WakePolicy } from './wake.js';

interface Incoming {
  key: string;
  from: BusPeer;
  entry: EntryCopy;
  reader: ChannelReader<unknown> | null;
}

/** A reader of a channel whose writer left after closing it: it may read to EOF. */
interface Draining {
  reader: ChannelReader<unknown>;
  slot: number;
}

interface AcceptWaiter {
  name: string;
  from: number | undefined;
  take(incoming: Incoming): void;
}

/** Options of {@link Directory.accept} once the bus resolved `from` to a slot. */
export interface AcceptOptions<T> {
  from?: number;
  codec?: Codec<T>;
  spin?: number;
  signal: AbortSignal;
}

/** Where incoming channels go when no accept() waits for them: the bus's `channel` event. */
export interface Offers {
  listening(): boolean;
  offer(channel: IncomingChannel): void;
}

/** Channels opened to this peer. */
export class Directory {
  readonly #ctx: BusContext;
  readonly #wake: WakePolicy;
  readonly #offers: Offers;
  readonly #incoming = new Map<string, Incoming>();
  readonly #draining = new Set<Draining>();
  /** Keys of every entry offered so far and still in its owner's directory: never offered twice. */
  readonly #seen = new Set<string>();
  readonly #waiters = new Set<AcceptWaiter>();

  constructor(ctx: BusContext, wake: WakePolicy, offers: Offers) {
    this.#ctx = ctx;
    this.#wake = wake;
    this.#offers = offers;
  }

  /** Rereads `peer`'s directory: offers new entries to us, withdraws offers whose entry went. */
  scan(peer: BusPeer): void {
    const { memory, geometry, self } = this.#ctx;
    const minRing = RING_HEADER_SIZE + RING_MIN_CAPACITY;
    const live = new Set<string>();
    for (let e = 0; e < geometry.entries; e++) {
      const entry = readEntry(memory, geometry, peer.slot, e, minRing);
      if (entry.state !== ENTRY_STATE.open || entry.destinationSlot !== self.slot || entry.destinationSession !== self.session) continue;
      const key = `${peer.slot}:${peer.session}:${e}:${entry.serial}`;
      live.add(key);
      if (this.#seen.has(key)) continue;
      // An entry we cannot use is skipped, not fatal: the peer's other channels may be fine.
      if (entry.problem) continue;
      const incoming: Incoming = { key, from: peer, entry, reader: null };
      this.#seen.add(key);
      this.#incoming.set(key, incoming);
      this.#offer(incoming);
    }
    // Offers nobody took whose entry has gone (the writer gave up on them) are withdrawn.
    for (const [key, incoming] of this.#incoming) {
      if (incoming.from.slot === peer.slot && !incoming.reader && !live.has(key)) this.#incoming.delete(key);
    }
    const prefix = `${peer.slot}:${peer.session}:`;
    for (const key of this.#seen) if (key.startsWith(prefix) && !live.has(key)) this.#seen.delete(key);
  }

  /**
   * The reader of the next channel named `name` opened to us (by slot `from`, when given),
   * including one offered before this call.
   */
  accept<T>(name: string, options: AcceptOptions<T>): Promise<ChannelReader<T>> {
    const { from, signal } = options;
    const matches = (i: Incoming): boolean => i.reader === null && i.entry.name === name && (from === undefined || i.from.slot === from);
    const ready = [...this.#incoming.values()].find(matches);
    if (ready) return Promise.resolve(this.#take<T>(ready, options));
    return new Promise((resolve, reject) => {
      const aborted = (): void => {
        this.#waiters.delete(waiter);
        reject(abortError(signal.reason));
      };
      const waiter: AcceptWaiter = {
        name,
        from,
        take: (incoming) => {
          this.#waiters.delete(waiter);
          signal.removeEventListener('abort', aborted);
          try {
            resolve(this.#take<T>(incoming, options));
          } catch (error) {
            reject(error);
          }
        },
      };
      this.#waiters.add(waiter);
      signal.addEventListener('abort', aborted, { once: true });
    });
  }

  /**
   * `peer` is down: its channels to us end with `gone`, except that the readers of channels
   * whose writer closed before a clean leave may drain to EOF, as long as nobody else takes its
   * slot and section.
   */
  peerDown(peer: BusPeer, reason: PeerDownReason, gone: ChannelError): void {
    const prefix = `${peer.slot}:${peer.session}:`;
    for (const key of this.#seen) if (key.startsWith(prefix)) this.#seen.delete(key);
    for (const [key, incoming] of this.#incoming) {
      if (!samePeer(incoming.from, peer)) continue;
      this.#incoming.delete(key);
      const reader = incoming.reader;
      if (!reader) continue;
      // The section is no longer its writer's: a drain reads, never writes (SPEC 3.5).
      const drain = reason === 'left' && ringEnds(this.#ctx.memory, incoming.entry.ringOffset).writerClosed;
      if (drain) reader.detach();
      if (drain && !finished(reader)) this.#draining.add({ reader, slot: peer.slot });
      else reader.abandon(gone);
    }
  }

  /** Forgets channels that are over, and ends drains whose section has a new owner. */
  tidy(): void {
    for (const [key, incoming] of this.#incoming) {
      const r = incoming.reader;
      if (r && finished(r)) this.#incoming.delete(key);
    }
    for (const d of this.#draining) {
      if (finished(d.reader)) {
        this.#draining.delete(d);
      } else if (slotOwner(this.#ctx.memory, this.#ctx.geometry, d.slot) !== 0) {
        d.reader.abandon(new ChannelError('ERR_IVSHMEM_PEER_GONE', 'channel: its writer left and another peer took its place before it was read to the end'));
        this.#draining.delete(d);
      }
    }
  }

  /** Closes every reader (we leave the bus). */
  closeAll(): void {
    for (const incoming of this.#incoming.values()) incoming.reader?.close();
    for (const d of this.#draining) d.reader.close();
  }

  /** Ends every reader with `error` (the bus ended). */
  abandonAll(error: ChannelError): void {
    for (const incoming of this.#incoming.values()) incoming.reader?.abandon(error);
    for (const d of this.#draining) d.reader.abandon(error);
  }

  #offer(incoming: Incoming): void {
    for (const waiter of this.#waiters) {
      if (waiter.name === incoming.entry.name && (waiter.from === undefined || waiter.from === incoming.from.slot)) {
        waiter.take(incoming);
        return;
      }
    }
    if (!this.#offers.listening()) return;
    const take = <T>(options: { codec?: Codec<T> } = {}): ChannelReader<T> => this.#take<T>(incoming, options);
    this.#offers.offer({ from: incoming.from, name: incoming.entry.name, accept: take });
  }

  #take<T>(incoming: Incoming, options: { codec?: Codec<T>; spin?: number }): ChannelReader<T> {
    if (incoming.reader) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel '${incoming.entry.name}' from '${incoming.from.name}' was already accepted`);
    const { entry, from } = incoming;
    let reader: ChannelReader<T>;
    try {
      reader = new ChannelReader<T>(this.#ctx.memory, {
        offset: entry.ringOffset,
        size: entry.ringSize,
        codec: options.codec,
        spin: options.spin,
        wait: this.#wake.waitStrategy(from, entry.vector),
      });
    } catch (error) {
      if (!(error instanceof ChannelError)) throw error;
      // A ring the writer corrupted: hand over a reader that fails on first use, so that a
      // hostile peer cannot make a 'channel' listener throw out of our scan.
      reader = failedReader<T>(error, options.codec);
    }
    incoming.reader = reader as ChannelReader<unknown>;
    return reader;
  }
}

/**
 * Whether `reader` has nothing more to give: at EOF, or failed. Looking for EOF validates the
 * writer's tail, which a hostile writer may have corrupted before leaving: that fails the
 * reader (its `failure` is then set, and its user sees it), and must not throw out of the scan,
 * timer or event that asked.
 */
function finished(reader: ChannelReader<unknown>): boolean {
  if (reader.failure) return true;
  try {
    return reader.done;
  } catch (error) {
    if (error instanceof ChannelError) return true;
    throw error;
  }
}
