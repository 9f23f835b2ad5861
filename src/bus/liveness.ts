// Peer liveness: our heartbeat, and a scan of every slot for who came, who left and who went
// silent for three of its own heartbeat periods.
import { SLOT_STATE } from './layout.js';
import { readSlot, releaseSlot, storeHeartbeat, type SlotCopy } from './slots.js';
import type { BusContext, BusPeer, PeerDownReason } from './types.js';

/** What liveness tells the bus. */
export interface LivenessHooks {
  up(peer: BusPeer): void;
  /** `peer` is down (its slot already released when it was declared dead). */
  down(peer: BusPeer, reason: PeerDownReason): void;
  /** `peer`'s directory changed (or is seen for the first time). */
  directoryChanged(peer: BusPeer): void;
}

/**
 * Periods of silence after which a peer is down. Three, so that one beat that comes late by up
 * to two periods (a GC pause, a stalled TCG guest) never evicts a live peer: with beats every
 * half period (see {@link BEATS_PER_PERIOD}) a peer may stall 2.5 periods. A dead one is down
 * within 3 periods + 2 of the observer's scan intervals after its last beat.
 */
export const DOWN_AFTER_PERIODS = 3;

/** Heartbeats per declared period: the spec asks for one at least; two leave room for timer lateness. */
export const BEATS_PER_PERIOD = 2;

/** Milliseconds between an observer's scans: a quarter of its own period, at least 5. */
export function scanInterval(period: number): number {
  return Math.max(5, period / 4);
}

interface Known {
  peer: BusPeer;
  period: number;
  heartbeat: number;
  changed: number;
  directoryGeneration: number | null;
}

/** The other peers that are up, as of the last scan. */
export class Liveness {
  readonly #ctx: BusContext;
  readonly #period: number;
  readonly #hooks: LivenessHooks;
  readonly #known = new Map<number, Known>();
  #heartbeat = 0;
  #lastTick = performance.now();

  constructor(ctx: BusContext, period: number, hooks: LivenessHooks) {
    this.#ctx = ctx;
    this.#period = period;
    this.#hooks = hooks;
  }

  /** The peers that are up, by slot. */
  get peers(): BusPeer[] {
    return [...this.#known.values()].map((k) => k.peer).sort((a, b) => a.slot - b.slot);
  }

  /** The peer up in `slot`, if any. */
  bySlot(slot: number): BusPeer | undefined {
    return this.#known.get(slot)?.peer;
  }

  /** The first peer up with this name, if any. */
  byName(name: string): BusPeer | undefined {
    for (const k of this.#known.values()) if (k.peer.name === name) return k.peer;
    return undefined;
  }

  /** Whether this session of `peer` is still up. */
  isUp(peer: BusPeer): boolean {
    return this.#known.get(peer.slot)?.peer.session === peer.session;
  }

  /** Stores the next heartbeat in our slot. */
  beat(): void {
    const { memory, geometry, self } = this.#ctx;
    storeHeartbeat(memory, geometry, self.slot, (this.#heartbeat = (this.#heartbeat + 1) >>> 0));
  }

  /** The peers behind device ID `id` left the server: down now. */
  disconnected(id: number): void {
    for (const k of [...this.#known.values()]) if (k.peer.deviceId === id) this.#down(k, 'disconnected', true);
  }

  /** Looks at every slot once. */
  scan(): void {
    const { memory, geometry, self } = this.#ctx;
    const now = performance.now();
    // After a stall of our own (a busy event loop, a paused VM) nobody's silence means anything.
    const stalled = now - this.#lastTick > this.#period;
    this.#lastTick = now;
    for (let i = 0; i < geometry.maxPeers; i++) {
      if (i === self.slot) continue;
      const copy = readSlot(memory, geometry, i);
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
      } else if (now - k.changed > DOWN_AFTER_PERIODS * k.period) {
        this.#down(k, 'heartbeat', true);
        continue;
      }
      if (copy.directoryGeneration !== k.directoryGeneration) {
        k.directoryGeneration = copy.directoryGeneration;
        this.#hooks.directoryChanged(k.peer);
      }
    }
  }

  #up(slot: number, copy: SlotCopy, now: number): Known {
    const peer: BusPeer = Object.freeze({ slot, session: copy.owner, name: copy.name, deviceId: copy.deviceId, vectors: copy.vectors });
    const k: Known = { peer, period: copy.period, heartbeat: copy.heartbeat, changed: now, directoryGeneration: null };
    this.#known.set(slot, k);
    this.#hooks.up(peer);
    return k;
  }

  #down(k: Known, reason: PeerDownReason, reclaim: boolean): void {
    if (this.#known.get(k.peer.slot) !== k) return;
    this.#known.delete(k.peer.slot);
    // Free the slot for the next peer; fails harmlessly if another observer was first.
    if (reclaim) releaseSlot(this.#ctx.memory, this.#ctx.geometry, k.peer.slot, k.peer.session);
    this.#hooks.down(k.peer, reason);
  }
}
