import { EventEmitter } from 'node:events';
import { ChannelError, ChannelWriter, RING_HEADER_SIZE, type ChannelReader, type Codec } from '../channel/index.js';
import type { Device } from '../device/index.js';
import { abortError, fail, ivshmemError, IvshmemError } from '../errors.js';
import { checkCapacity, SectionAllocator } from './allocator.js';
import { Directory } from './directory.js';
import { NAME_MAX } from './layout.js';
import { BEATS_PER_PERIOD, Liveness, scanInterval } from './liveness.js';
import type { Geometry } from './region.js';
import { markLeaving, nameBytes, releaseSlot, slotOwner } from './slots.js';
import type { BusContext, BusEvents, BusPeer, PeerDownReason } from './types.js';
import { CONTROL_VECTOR, WakePolicy } from './wake.js';

/**
 * Peers on one shared-memory region: who is there (by name, with liveness), and named channels
 * between them. Create with {@link attach}.
 *
 * The bus coordinates four concerns, each in a file of its own: `Liveness` (heartbeats,
 * who is up), the `Directory` of channels opened to us, the `SectionAllocator` of
 * our own section (the channels we open), and the `WakePolicy`; the peer table's atomics
 * are in slots.ts.
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
  readonly #wake: WakePolicy;
  readonly #liveness: Liveness;
  readonly #directory: Directory;
  readonly #section: SectionAllocator;
  readonly #stop = new AbortController();
  readonly #timers: NodeJS.Timeout[] = [];
  #closed = false;

  /** @internal */
  constructor(device: Device, geometry: Geometry, self: BusPeer, options: { period: number; capacity: number; maxPeerPeriod?: number }) {
    super();
    this.#device = device;
    this.#memory = device.memory;
    this.geometry = geometry;
    this.self = self;
    this.#period = options.period;
    this.#capacity = options.capacity;
    const ctx: BusContext = { memory: this.#memory, geometry, self };
    this.#wake = new WakePolicy(device, self);
    this.#section = new SectionAllocator(ctx);
    this.#directory = new Directory(ctx, this.#wake, {
      listening: () => this.listenerCount('channel') > 0,
      offer: (channel) => this.emit('channel', channel),
    });
    this.#liveness = new Liveness(ctx, options.period, {
      up: (peer) => this.emit('peer-up', peer),
      down: (peer, reason) => this.#peerDown(peer, reason),
      directoryChanged: (peer) => this.#directory.scan(peer),
    }, options.maxPeerPeriod);
  }

  /** The other peers that are up, by slot. */
  get peers(): BusPeer[] {
    return this.#liveness.peers;
  }

  /** True once the bus closed (by {@link Bus.close} or a failure). */
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
      const signals = this.#signal(options.signal);
      const up = (peer: BusPeer): void => {
        if (peer.name !== name) return;
        cleanup();
        resolve(peer);
      };
      const aborted = (): void => {
        cleanup();
        reject(abortError(signals.reason));
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
    checkChannelName(name, 'open()');
    const capacity = options.capacity ?? this.#capacity;
    checkCapacity(capacity, 'open(): capacity');
    const size = RING_HEADER_SIZE + capacity;
    const place = this.#section.allocate(size, (p) => this.#liveness.isUp(p));
    const vector = this.#wake.vectorFor(to, place.entry);
    const writer = new ChannelWriter<T>(this.#memory, {
      offset: place.offset,
      size,
      codec: options.codec,
      spin: options.spin,
      wait: this.#wake.waitStrategy(to, vector),
      format: { capacity },
    });
    this.#section.publish({ ...place, size }, to, vector, name, writer as ChannelWriter<unknown>);
    this.#wake.ring(to);
    return writer;
  }

  /**
   * Resolves with the reader of the next channel named `name` opened to us (by `from`, when
   * given), including one opened before this call.
   */
  accept<T = Uint8Array>(name: string, options: { from?: BusPeer | number | string; codec?: Codec<T>; spin?: number; signal?: AbortSignal } = {}): Promise<ChannelReader<T>> {
    let from: number | undefined;
    try {
      this.#assertOpen();
      checkChannelName(name, 'accept()');
      from = options.from === undefined ? undefined : this.#resolve(options.from).slot;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#directory.accept<T>(name, { from, codec: options.codec, spin: options.spin, signal: this.#signal(options.signal) });
  }

  /** {@link Bus.close}, for `using bus = await attach(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Leaves the bus: our channels end (readers elsewhere see EOF after what was sent), our slot
   * is released and the others are rung. The device stays open. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    // Write nothing shared unless the slot, and so the section, is still ours.
    if (this.#owned()) {
      markLeaving(this.#memory, this.geometry, this.self.slot);
      this.#section.closeAll();
      this.#directory.closeAll();
      releaseSlot(this.#memory, this.geometry, this.self.slot, this.self.session);
      for (const peer of this.#liveness.peers) this.#wake.ring(peer);
    }
    this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the bus was closed'), false);
  }

  /** @internal Starts heartbeats, liveness checks and the control doorbell. */
  start(): void {
    this.#timers.push(setInterval(() => this.#guard('heartbeat', () => this.#beat()), this.#period / BEATS_PER_PERIOD));
    this.#timers.push(setInterval(() => this.#guard('scan', () => this.#scan()), scanInterval(this.#period)));
    if (this.#device.receivesInterrupts) void this.#controlLoop();
    const device = this.#device;
    const disconnected = (id: number): void => this.#guard('peer-disconnected event', () => this.#liveness.disconnected(id));
    device.on('peer-disconnected', disconnected);
    this.#stop.signal.addEventListener('abort', () => device.off('peer-disconnected', disconnected), { once: true });
    this.#scan();
    for (const peer of this.#liveness.peers) this.#wake.ring(peer);
  }

  #signal(extra: AbortSignal | undefined): AbortSignal {
    return AbortSignal.any([this.#stop.signal, ...(extra ? [extra] : [])]);
  }

  #owned(): boolean {
    if (this.#memory.byteLength === 0) return false;
    return slotOwner(this.#memory, this.geometry, this.self.slot) === this.self.session;
  }

  async #controlLoop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        await this.#device.waitInterrupt(CONTROL_VECTOR, { signal });
      } catch {
        return;
      }
      this.#guard('control doorbell', () => this.#scan());
    }
  }

  /**
   * Every entry of the event loop into the bus (heartbeat and scan timers, the control
   * doorbell, the device's events) runs through here. A timer or event has nobody to throw to:
   * whatever escapes the checks below it (a shared-memory state no check foresaw, or one of our
   * own listeners throwing) fails this bus with a typed error, carried by `close` and by `error`
   * when somebody listens, and the process keeps running.
   */
  #guard(what: string, work: () => void): void {
    if (this.#closed) return;
    try {
      work();
    } catch (error) {
      const code = error instanceof IvshmemError || error instanceof ChannelError ? (error.code as IvshmemError['code']) : 'ERR_IVSHMEM_REGION';
      const message = error instanceof Error ? error.message : String(error);
      this.#shutdown(ivshmemError(code, `the bus failed in its ${what}: ${message}`, { cause: error }), true);
    }
  }

  #beat(): void {
    if (this.#closed) return;
    if (this.#memory.byteLength === 0) return this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the device under the bus was closed'), true);
    if (!this.#owned()) {
      return this.#shutdown(
        ivshmemError('ERR_IVSHMEM_EVICTED', `this peer lost its slot ${this.self.slot}: the others declared it dead (stalled for more than three heartbeat periods?)`),
        true,
      );
    }
    this.#liveness.beat();
  }

  // Looks at every slot: who came, who left, who went silent, and what they opened to us.
  #scan(): void {
    if (this.#closed) return;
    if (this.#memory.byteLength === 0) return this.#shutdown(ivshmemError('ERR_IVSHMEM_CLOSED', 'the device under the bus was closed'), true);
    this.#directory.tidy();
    this.#liveness.scan();
  }

  #peerDown(peer: BusPeer, reason: PeerDownReason): void {
    const gone = new ChannelError('ERR_IVSHMEM_PEER_GONE', `channel: peer '${peer.name}' (slot ${peer.slot}) is down: ${reason}`);
    this.#section.abandon(gone, peer);
    this.#directory.peerDown(peer, reason, gone);
    this.emit('peer-down', peer, reason);
  }

  #resolve(peer: BusPeer | number | string): BusPeer {
    const slot = typeof peer === 'object' && peer !== null ? peer.slot : peer;
    const found = typeof slot === 'string' ? this.#liveness.byName(slot) : this.#liveness.bySlot(slot as number);
    if (!found || (typeof peer === 'object' && peer !== null && peer.session !== found.session)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `no peer ${typeof peer === 'object' && peer !== null ? `'${peer.name}' (slot ${peer.slot})` : JSON.stringify(peer)} is up on this bus`);
    }
    return found;
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
    const gone = new ChannelError(reason instanceof IvshmemError ? reason.code : 'ERR_IVSHMEM_CLOSED', `channel: ${reason.message}`);
    this.#section.abandon(gone);
    this.#directory.abandonAll(gone);
    // Listeners run from a timer or an event here: one that throws must not leave through it.
    try {
      if (failed && this.listenerCount('error') > 0) this.emit('error', reason);
    } finally {
      this.emit('close', failed ? reason : undefined);
    }
  }
}

// A name no entry can carry would never match an offer: a wait for it could never end.
function checkChannelName(name: string, what: string): void {
  if (typeof name !== 'string' || nameBytes(name) === 0 || nameBytes(name) > NAME_MAX) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what}: the channel name must be 1..${NAME_MAX} bytes of UTF-8, got ${JSON.stringify(name)}`);
  }
}
