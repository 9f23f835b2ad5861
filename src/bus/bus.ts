import { EventEmitter } from 'node:events';
import { randomInt } from 'node:crypto';
import { ChannelError } from '../channel/errors.js';
import { RING_HEADER_SIZE, RING_MIN_CAPACITY, W_READER_CLOSED, W_WRITER_CLOSED } from '../channel/layout.js';
import { ChannelReader } from '../channel/reader.js';
import { formatRing } from '../channel/ring.js';
import { deviceWaitStrategy, pollingWaitStrategy, type WaitStrategy } from '../channel/wait.js';
import { ChannelWriter } from '../channel/writer.js';
import type { Codec } from '../channel/codec.js';
import type { Device } from '../device/types.js';
import { fail, ivshmemError, IvshmemError, type IvshmemErrorCode } from '../errors.js';
import { ENTRY_STATE, NAME_MAX, PERIOD_MAX, PERIOD_MIN, SLOT, SLOT_STATE } from './layout.js';
import { openRegion, ringArea, type Geometry, type RegionFormat } from './region.js';
import { nameBytes, readEntry, readSlot, setEntryState, slotWords, writeEntry, writeSlot, type EntryCopy, type SlotCopy } from './slots.js';

/** Options of {@link attach}. */
export interface AttachOptions extends RegionFormat {
  /** This peer's name, as others see it (1..64 bytes of UTF-8). */
  name: string;
  /** Heartbeat period in milliseconds (default 1000): a peer silent for two periods is down. */
  heartbeat?: number;
  /**
   * Data-area bytes of the channels this peer opens, a power of two. Default: 64 KiB, or less so
   * that at least four rings fit in this peer's section.
   */
  channelCapacity?: number;
  /** How long to wait for another peer that is formatting the region (default 5000 ms). */
  formatTimeout?: number;
  signal?: AbortSignal;
}

/** Another peer on the bus (or this one: {@link Bus.self}). */
export interface BusPeer {
  /** Its slot in the peer table: the bus address of the peer. */
  readonly slot: number;
  /** Random per attach: a restarted peer is a new session, even in the same slot. */
  readonly session: number;
  readonly name: string;
  /** Its ivshmem peer ID, or null without doorbells. */
  readonly deviceId: number | null;
  /** Vectors it can be woken on (0: it polls). */
  readonly vectors: number;
}

/** Why a peer is down. */
export type PeerDownReason = 'left' | 'heartbeat' | 'disconnected' | 'replaced' | 'corrupt';

/** A channel another peer opened to us, not yet accepted. */
export interface IncomingChannel {
  readonly from: BusPeer;
  readonly name: string;
  /** Takes the channel: its reader, decoding with `codec`. */
  accept<T = Uint8Array>(options?: { codec?: Codec<T> }): ChannelReader<T>;
}

/** Events of a {@link Bus}. */
export interface BusEvents {
  'peer-up': [peer: BusPeer];
  'peer-down': [peer: BusPeer, reason: PeerDownReason];
  /** A channel was opened to us and nobody was waiting in {@link Bus.accept} for its name. */
  channel: [channel: IncomingChannel];
  /**
   * This peer lost its slot (declared dead by the others while stalled, or freed by a hostile
   * peer); the bus is closed. Emitted only when somebody listens: `close` carries it too.
   */
  error: [error: Error];
  /** The bus closed: by {@link Bus.close} (no error), or because of `error`. */
  close: [error?: Error];
}

interface Known {
  peer: BusPeer;
  period: number;
  heartbeat: number;
  changed: number;
  directoryGeneration: number | null;
}

interface Outgoing {
  entry: number;
  serial: number;
  offset: number;
  size: number;
  to: BusPeer;
  writer: ChannelWriter<unknown>;
}

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

const CONTROL_VECTOR = 0;


/**
 * Peers on one shared-memory region: who is there (by name, with liveness), and named channels
 * between them. Create with {@link attach}.
 */
export class Bus extends EventEmitter<BusEvents> {
  /** The region's geometry as validated at attach. */
  readonly geometry: Geometry;
  /** This peer. */
  readonly self: BusPeer;
  readonly #device: Device;
  readonly #memory: ArrayBuffer;
  readonly #period: number;
  readonly #capacity: number;
  readonly #known = new Map<number, Known>();
  readonly #outgoing = new Map<number, Outgoing>();
  readonly #incoming = new Map<string, Incoming>();
  readonly #draining = new Set<Draining>();
  /** Keys of every entry offered so far and still in its owner's directory: never offered twice. */
  readonly #seen = new Set<string>();
  readonly #waiters = new Set<AcceptWaiter>();
  readonly #stop = new AbortController();
  readonly #timers: NodeJS.Timeout[] = [];
  #serial = 0;
  #heartbeat = 0;
  #directoryGeneration = 0;
  #lastTick = performance.now();
  #closed = false;

  /** @internal */
  constructor(device: Device, geometry: Geometry, self: BusPeer, options: { period: number; capacity: number }) {
    super();
    this.#device = device;
    this.#memory = device.memory;
    this.geometry = geometry;
    this.self = self;
    this.#period = options.period;
    this.#capacity = options.capacity;
  }

  /** The other peers that are up, by slot. */
  get peers(): BusPeer[] {
    return [...this.#known.values()].map((k) => k.peer).sort((a, b) => a.slot - b.slot);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The first peer that is up with this name, if any. */
  peer(name: string): BusPeer | undefined {
    return this.peers.find((p) => p.name === name);
  }

  /** Resolves with the peer named `name` once it is up. */
  waitForPeer(name: string, options: { signal?: AbortSignal } = {}): Promise<BusPeer> {
    const found = this.peer(name);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const signals = AbortSignal.any([this.#stop.signal, ...(options.signal ? [options.signal] : [])]);
      const up = (peer: BusPeer): void => {
        if (peer.name !== name) return;
        cleanup();
        resolve(peer);
      };
      const aborted = (): void => {
        cleanup();
        reject(signals.reason);
      };
      const cleanup = (): void => {
        this.off('peer-up', up);
        signals.removeEventListener('abort', aborted);
      };
      this.on('peer-up', up);
      signals.addEventListener('abort', aborted, { once: true });
    });
  }

  /**
   * Opens a one-way channel named `name` to `peer` (a {@link BusPeer}, its slot or its name) and
   * returns its writer. The ring lives in this peer's section; `peer` receives it through
   * {@link Bus.accept} or the `channel` event.
   */
  open<T = Uint8Array>(peer: BusPeer | number | string, name: string, options: { codec?: Codec<T>; capacity?: number; spin?: number } = {}): ChannelWriter<T> {
    this.#assertOpen();
    const to = this.#resolve(peer);
    const bytes = nameBytes(name);
    if (typeof name !== 'string' || bytes === 0 || bytes > NAME_MAX) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `open(): the channel name must be 1..${NAME_MAX} bytes of UTF-8, got ${JSON.stringify(name)}`);
    }
    const capacity = options.capacity ?? this.#capacity;
    checkCapacity(capacity, 'open(): capacity');
    const size = RING_HEADER_SIZE + capacity;
    const slot = this.#allocate(size);
    const serial = (this.#serial = (this.#serial + 1) >>> 0);
    const vector = this.#vectorFor(to, slot.entry);
    const writer = new ChannelWriter<T>(this.#memory, {
      offset: slot.offset,
      size,
      codec: options.codec,
      spin: options.spin,
      wait: this.#waitStrategy(to, vector),
      format: { capacity },
    });
    writeEntry(this.#memory, this.geometry, this.self.slot, slot.entry, {
      serial,
      destinationSlot: to.slot,
      destinationSession: to.session,
      ringOffset: slot.offset,
      ringSize: size,
      vector,
      name,
    });
    this.#outgoing.set(slot.entry, { entry: slot.entry, serial, offset: slot.offset, size, to, writer: writer as ChannelWriter<unknown> });
    this.#bumpDirectory();
    this.#ring(to);
    return writer;
  }

  /**
   * Resolves with the reader of the next channel named `name` opened to us (by `from`, when
   * given), including one opened before this call.
   */
  accept<T = Uint8Array>(name: string, options: { from?: BusPeer | number | string; codec?: Codec<T>; spin?: number; signal?: AbortSignal } = {}): Promise<ChannelReader<T>> {
    try {
      this.#assertOpen();
    } catch (error) {
      return Promise.reject(error);
    }
    const from = options.from === undefined ? undefined : this.#resolve(options.from).slot;
    const matches = (i: Incoming): boolean => i.reader === null && i.entry.name === name && (from === undefined || i.from.slot === from);
    const ready = [...this.#incoming.values()].find(matches);
    if (ready) return Promise.resolve(this.#take<T>(ready, options));
    return new Promise((resolve, reject) => {
      const signals = AbortSignal.any([this.#stop.signal, ...(options.signal ? [options.signal] : [])]);
      const aborted = (): void => {
        this.#waiters.delete(waiter);
        reject(signals.reason);
      };
      const waiter: AcceptWaiter = {
        name,
        from,
        take: (incoming) => {
          this.#waiters.delete(waiter);
          signals.removeEventListener('abort', aborted);
          try {
            resolve(this.#take<T>(incoming, options));
          } catch (error) {
            reject(error);
          }
        },
      };
      this.#waiters.add(waiter);
      signals.addEventListener('abort', aborted, { once: true });
    });
  }

  /**
   * Leaves the bus: our channels end (readers elsewhere see EOF after what was sent), our slot
   * is released and the others are rung. The device stays open. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    // Write nothing shared unless the slot, and so the section, is still ours.
    if (this.#owned()) {
      const words = slotWords(this.#memory, this.geometry, this.self.slot);
      Atomics.store(words, SLOT.state / 4, SLOT_STATE.leaving);
      for (const out of this.#outgoing.values()) {
        out.writer.close();
        setEntryState(this.#memory, this.geometry, this.self.slot, out.entry, ENTRY_STATE.closed);
      }
      for (const incoming of this.#incoming.values()) incoming.reader?.close();
      for (const d of this.#draining) d.reader.close();
      Atomics.compareExchange(words, SLOT.owner / 4, this.self.session, 0);
      for (const k of this.#known.values()) this.#ring(k.peer);
    }
    this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the bus was closed'), false);
  }

  #owned(): boolean {
    if (this.#memory.byteLength === 0) return false;
    return Atomics.load(slotWords(this.#memory, this.geometry, this.self.slot), SLOT.owner / 4) === this.self.session;
  }

  /** @internal Starts heartbeats, liveness checks and the control doorbell. */
  start(): void {
    this.#timers.push(setInterval(() => this.#beat(), this.#period));
    this.#timers.push(setInterval(() => this.#scan(), Math.max(5, this.#period / 4)));
    if (this.#device.receivesInterrupts) void this.#controlLoop();
    const device = this.#device as Device;
    const disconnected = (id: number): void => {
      for (const k of [...this.#known.values()]) if (k.peer.deviceId === id) this.#down(k, 'disconnected', true);
    };
    device.on('peer-disconnected', disconnected);
    this.#stop.signal.addEventListener('abort', () => device.off('peer-disconnected', disconnected), { once: true });
    this.#scan();
    for (const k of this.#known.values()) this.#ring(k.peer);
  }

  async #controlLoop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        await this.#device.waitInterrupt(CONTROL_VECTOR, { signal });
      } catch {
        return;
      }
      this.#scan();
    }
  }

  #beat(): void {
    if (this.#closed) return;
    if (this.#memory.byteLength === 0) return this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the device under the bus was closed'), true);
    if (!this.#owned()) {
      return this.#shutdown(
        ivshmemError('ERR_IVSHMEM_EVICTED', `this peer lost its slot ${this.self.slot}: the others declared it dead (stalled for more than two heartbeats?)`),
        true,
      );
    }
    const words = slotWords(this.#memory, this.geometry, this.self.slot);
    Atomics.store(words, SLOT.heartbeat / 4, (this.#heartbeat = (this.#heartbeat + 1) >>> 0));
  }

  // Looks at every slot: who came, who left, who went silent, and what they opened to us.
  #scan(): void {
    if (this.#closed) return;
    if (this.#memory.byteLength === 0) return this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the device under the bus was closed'), true);
    const now = performance.now();
    // After a stall of our own (a busy event loop, a paused VM) nobody's silence means anything.
    const stalled = now - this.#lastTick > this.#period;
    this.#lastTick = now;
    this.#tidy();
    for (let i = 0; i < this.geometry.maxPeers; i++) {
      if (i === this.self.slot) continue;
      const copy = readSlot(this.#memory, this.geometry, i);
      const known = this.#known.get(i);
      if (known && (copy.owner !== known.peer.session || copy.state !== SLOT_STATE.up)) {
        this.#down(known, copy.owner === known.peer.session || copy.owner === 0 ? 'left' : 'replaced', false);
      }
      if (copy.owner === 0 || copy.state !== SLOT_STATE.up || copy.published !== copy.owner) continue;
      let k = this.#known.get(i);
      if (!k) {
        if (copy.problem) continue;
        k = this.#up(i, copy, now);
      }
      if (copy.heartbeat !== k.heartbeat || stalled) {
        k.heartbeat = copy.heartbeat;
        k.changed = now;
      } else if (now - k.changed > 2 * k.period) {
        this.#down(k, 'heartbeat', true);
        continue;
      }
      if (copy.directoryGeneration !== k.directoryGeneration) {
        k.directoryGeneration = copy.directoryGeneration;
        this.#scanDirectory(k);
      }
    }
  }

  #up(slot: number, copy: SlotCopy, now: number): Known {
    const peer: BusPeer = Object.freeze({ slot, session: copy.owner, name: copy.name, deviceId: copy.deviceId, vectors: copy.vectors });
    const k: Known = { peer, period: copy.period, heartbeat: copy.heartbeat, changed: now, directoryGeneration: null };
    this.#known.set(slot, k);
    this.emit('peer-up', peer);
    return k;
  }

  #down(k: Known, reason: PeerDownReason, reclaim: boolean): void {
    if (this.#known.get(k.peer.slot) !== k) return;
    this.#known.delete(k.peer.slot);
    const prefix = `${k.peer.slot}:${k.peer.session}:`;
    for (const key of this.#seen) if (key.startsWith(prefix)) this.#seen.delete(key);
    const gone = new ChannelError('ERR_IVSHMEM_PEER_GONE', `channel: peer '${k.peer.name}' (slot ${k.peer.slot}) is down: ${reason}`);
    for (const out of this.#outgoing.values()) if (out.to.slot === k.peer.slot && out.to.session === k.peer.session) out.writer.abandon(gone);
    for (const [key, incoming] of this.#incoming) {
      if (incoming.from.slot !== k.peer.slot || incoming.from.session !== k.peer.session) continue;
      this.#incoming.delete(key);
      const reader = incoming.reader;
      if (!reader) continue;
      // A peer that left cleanly closed its writers first: their readers may drain to EOF, as
      // long as nobody else takes the slot and its section. Any other channel ends now.
      const ring = new Uint32Array(this.#memory, incoming.entry.ringOffset, RING_HEADER_SIZE / 4);
      if (reason === 'left' && Atomics.load(ring, W_WRITER_CLOSED) !== 0 && !reader.done) this.#draining.add({ reader, slot: k.peer.slot });
      else reader.abandon(gone);
    }
    if (reclaim) {
      // Free the slot for the next peer; the CAS fails harmlessly if another observer was first.
      Atomics.compareExchange(slotWords(this.#memory, this.geometry, k.peer.slot), SLOT.owner / 4, k.peer.session, 0);
    }
    this.emit('peer-down', k.peer, reason);
  }

  // Forgets channels that are over, and ends drains whose section has a new owner.
  #tidy(): void {
    for (const [key, incoming] of this.#incoming) {
      const r = incoming.reader;
      if (r && (r.done || r.failure)) this.#incoming.delete(key);
    }
    for (const d of this.#draining) {
      if (d.reader.done || d.reader.failure) {
        this.#draining.delete(d);
      } else if (Atomics.load(slotWords(this.#memory, this.geometry, d.slot), SLOT.owner / 4) !== 0) {
        d.reader.abandon(new ChannelError('ERR_IVSHMEM_PEER_GONE', 'channel: its writer left and another peer took its place before it was read to the end'));
        this.#draining.delete(d);
      }
    }
  }

  #scanDirectory(k: Known): void {
    const minRing = RING_HEADER_SIZE + RING_MIN_CAPACITY;
    const live = new Set<string>();
    for (let e = 0; e < this.geometry.entries; e++) {
      const entry = readEntry(this.#memory, this.geometry, k.peer.slot, e, minRing);
      if (entry.state !== ENTRY_STATE.open || entry.destinationSlot !== this.self.slot || entry.destinationSession !== this.self.session) continue;
      const key = `${k.peer.slot}:${k.peer.session}:${e}:${entry.serial}`;
      live.add(key);
      if (this.#seen.has(key)) continue;
      // An entry we cannot use is skipped, not fatal: the peer's other channels may be fine.
      if (entry.problem) continue;
      const incoming: Incoming = { key, from: k.peer, entry, reader: null };
      this.#seen.add(key);
      this.#incoming.set(key, incoming);
      this.#offer(incoming);
    }
    // Offers nobody took whose entry has gone (the writer gave up on them) are withdrawn.
    for (const [key, incoming] of this.#incoming) {
      if (incoming.from.slot === k.peer.slot && !incoming.reader && !live.has(key)) this.#incoming.delete(key);
    }
    const prefix = `${k.peer.slot}:${k.peer.session}:`;
    for (const key of this.#seen) if (key.startsWith(prefix) && !live.has(key)) this.#seen.delete(key);
  }

  #offer(incoming: Incoming): void {
    for (const waiter of this.#waiters) {
      if (waiter.name === incoming.entry.name && (waiter.from === undefined || waiter.from === incoming.from.slot)) {
        waiter.take(incoming);
        return;
      }
    }
    if (this.listenerCount('channel') === 0) return;
    const bus = this;
    this.emit('channel', {
      from: incoming.from,
      name: incoming.entry.name,
      accept<T>(options: { codec?: Codec<T> } = {}) {
        return bus.#take<T>(incoming, options);
      },
    });
  }

  #take<T>(incoming: Incoming, options: { codec?: Codec<T>; spin?: number }): ChannelReader<T> {
    if (incoming.reader) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `channel '${incoming.entry.name}' from '${incoming.from.name}' was already accepted`);
    const { entry, from } = incoming;
    let reader: ChannelReader<T>;
    try {
      reader = new ChannelReader<T>(this.#memory, {
        offset: entry.ringOffset,
        size: entry.ringSize,
        codec: options.codec,
        spin: options.spin,
        wait: this.#waitStrategy(from, entry.vector),
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

  #resolve(peer: BusPeer | number | string): BusPeer {
    const slot = typeof peer === 'object' && peer !== null ? peer.slot : peer;
    const k = typeof slot === 'string' ? [...this.#known.values()].find((x) => x.peer.name === slot) : this.#known.get(slot as number);
    if (!k || (typeof peer === 'object' && peer !== null && peer.session !== k.peer.session)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `no peer ${typeof peer === 'object' && peer !== null ? `'${peer.name}' (slot ${peer.slot})` : JSON.stringify(peer)} is up on this bus`);
    }
    return k.peer;
  }

  // Both ends must agree: doorbells only when each side can ring the other and be woken.
  #doorbells(other: BusPeer): boolean {
    return this.self.deviceId !== null && this.self.vectors > 0 && other.deviceId !== null && other.vectors > 0;
  }

  #vectorFor(other: BusPeer, entry: number): number {
    if (!this.#doorbells(other)) return 0;
    const shared = Math.min(this.self.vectors, other.vectors);
    return shared > 1 ? 1 + (entry % (shared - 1)) : CONTROL_VECTOR;
  }

  #waitStrategy(other: BusPeer, vector: number): WaitStrategy {
    if (!this.#doorbells(other) || vector >= this.self.vectors || vector >= other.vectors) return pollingWaitStrategy();
    return deviceWaitStrategy(this.#device, { peer: other.deviceId!, vector });
  }

  #ring(peer: BusPeer): void {
    if (peer.deviceId === null || this.#device.vectors === 0 || peer.vectors === 0) return;
    try {
      this.#device.ring(peer.deviceId, CONTROL_VECTOR);
    } catch {
      // A closed device: the scan notices and shuts the bus down.
    }
  }

  #bumpDirectory(): void {
    const words = slotWords(this.#memory, this.geometry, this.self.slot);
    Atomics.store(words, SLOT.directoryGeneration / 4, (this.#directoryGeneration = (this.#directoryGeneration + 1) >>> 0));
  }

  // First fit in our own section; closed channels whose reader is done (or gone) are reclaimed.
  #allocate(size: number): { entry: number; offset: number } {
    this.#reclaim();
    let entry = -1;
    for (let e = 0; e < this.geometry.entries; e++) {
      if (!this.#outgoing.has(e)) {
        entry = e;
        break;
      }
    }
    const [start, end] = ringArea(this.geometry, this.self.slot);
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
          ? `all ${this.geometry.entries} channel entries of this peer are in use: close channels first`
          : `no room for a ${size}-byte ring in this peer's ${this.geometry.sectionSize}-byte section: close channels, use a smaller capacity, or format the region for fewer peers`,
      );
    }
    return { entry, offset };
  }

  #reclaim(): void {
    for (const [e, out] of this.#outgoing) {
      const ring = new Uint32Array(this.#memory, out.offset, RING_HEADER_SIZE / 4);
      const destGone = this.#known.get(out.to.slot)?.peer.session !== out.to.session;
      const finished = Atomics.load(ring, W_WRITER_CLOSED) !== 0 && Atomics.load(ring, W_READER_CLOSED) !== 0;
      if (destGone || finished || out.writer.failure) {
        setEntryState(this.#memory, this.geometry, this.self.slot, e, ENTRY_STATE.free);
        this.#outgoing.delete(e);
      }
    }
  }

  #assertOpen(): void {
    if (!this.#closed && this.#memory.byteLength === 0) this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the device under the bus was closed'), true);
    if (this.#closed) throw ivshmemError('ERR_IVSHMEM_CLOSED', 'the bus is closed');
  }

  // `failed`: the bus ends on its own (evicted, device closed), not by close().
  #shutdown(reason: Error, failed: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#stop.abort(reason);
    const gone = new ChannelError(reason instanceof IvshmemError ? (reason.code as IvshmemErrorCode) : 'ERR_IVSHMEM_CLOSED', `channel: ${reason.message}`);
    for (const out of this.#outgoing.values()) out.writer.abandon(gone);
    for (const incoming of this.#incoming.values()) incoming.reader?.abandon(gone);
    for (const d of this.#draining) d.reader.abandon(gone);
    if (failed && this.listenerCount('error') > 0) this.emit('error', reason);
    this.emit('close', failed ? reason : undefined);
  }
}

function failedReader<T>(error: ChannelError, codec: Codec<T> | undefined): ChannelReader<T> {
  const scratch = new ArrayBuffer(RING_HEADER_SIZE + RING_MIN_CAPACITY);
  formatRing(scratch, { capacity: RING_MIN_CAPACITY });
  const reader = new ChannelReader<T>(scratch, { codec });
  reader.abandon(error);
  return reader;
}

function align128(n: number): number {
  return Math.ceil(n / 128) * 128;
}

function checkCapacity(capacity: number, what: string): void {
  if (!Number.isInteger(capacity) || capacity < RING_MIN_CAPACITY || capacity > 2 ** 30 || (capacity & (capacity - 1)) !== 0) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what} must be a power of two from ${RING_MIN_CAPACITY} to 2^30 bytes, got ${String(capacity)}`);
  }
}

/**
 * Joins the bus on a device's shared memory, formatting the region if it is still empty.
 *
 * @example
 * ```ts
 * const bus = await attach(await connect('/tmp/ivshmem.sock'), { name: 'alice' });
 * const bob = await bus.waitForPeer('bob');
 * const out = bus.open(bob, 'chat', { codec: utf8Codec });
 * await out.send('hello');
 * ```
 */
export async function attach(device: Device, options: AttachOptions): Promise<Bus> {
  const name = options?.name;
  if (typeof name !== 'string' || nameBytes(name) === 0 || nameBytes(name) > NAME_MAX) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `attach(): name must be 1..${NAME_MAX} bytes of UTF-8, got ${JSON.stringify(name)}`);
  }
  const period = options.heartbeat ?? 1000;
  if (!Number.isInteger(period) || period < PERIOD_MIN || period > PERIOD_MAX) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `attach(): heartbeat must be ${PERIOD_MIN}..${PERIOD_MAX} ms, got ${String(period)}`);
  }
  if (options.channelCapacity !== undefined) checkCapacity(options.channelCapacity, 'attach(): channelCapacity');
  if (device.closed) fail('ERR_IVSHMEM_CLOSED', 'attach(): the device is closed');

  const memory = device.memory;
  const geometry = await openRegion(memory, options, { timeout: options.formatTimeout, signal: options.signal });
  const [areaStart, areaEnd] = ringArea(geometry, 0);
  const quarter = (areaEnd - areaStart) / 4 - RING_HEADER_SIZE;
  const capacity = options.channelCapacity ?? Math.max(RING_MIN_CAPACITY, Math.min(65536, 2 ** Math.floor(Math.log2(quarter))));
  const deviceId = device.vectors > 0 ? device.id : null;
  const vectors = device.receivesInterrupts ? device.vectors : 0;
  let session: number;
  do session = randomInt(1, 2 ** 32 - 1);
  while (session === 0);

  // A slot still held under our own device ID belongs to a dead previous incarnation of this
  // peer: device IDs are unique among the peers a server has connected.
  if (deviceId !== null) {
    for (let i = 0; i < geometry.maxPeers; i++) {
      const copy = readSlot(memory, geometry, i);
      if (copy.owner !== 0 && copy.deviceId === deviceId) Atomics.compareExchange(slotWords(memory, geometry, i), SLOT.owner / 4, copy.owner, 0);
    }
  }
  let slot = -1;
  for (let i = 0; i < geometry.maxPeers && slot < 0; i++) {
    const words = slotWords(memory, geometry, i);
    if (Atomics.compareExchange(words, SLOT.owner / 4, 0, session) === 0) slot = i;
  }
  if (slot < 0) {
    throw ivshmemError('ERR_IVSHMEM_BUS_FULL', `all ${geometry.maxPeers} peer slots of the region are taken: wait for a peer to leave (dead peers are freed within two heartbeats), or format the region for more peers`);
  }
  const words = slotWords(memory, geometry, slot);
  Atomics.store(words, SLOT.state / 4, SLOT_STATE.joining);
  writeSlot(memory, geometry, slot, { deviceId, vectors, period, name });
  // Our section may hold a previous owner's directory.
  for (let e = 0; e < geometry.entries; e++) setEntryState(memory, geometry, slot, e, ENTRY_STATE.free);
  Atomics.store(words, SLOT.state / 4, SLOT_STATE.up);
  // Last: until `published` equals `owner`, the other fields may still be a previous owner's.
  Atomics.store(words, SLOT.published / 4, session);

  const self: BusPeer = Object.freeze({ slot, session, name, deviceId, vectors });
  const bus = new Bus(device, geometry, self, { period, capacity });
  bus.start();
  return bus;
}
