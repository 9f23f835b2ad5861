// Peer liveness: our heartbeat, and a scan of every slot for who came, who left and who went
// silent for three of its own heartbeat periods.
import { PERIOD_MAX, SLOT_STATE } from './layout.js';
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

/** A slot someone holds that is not a peer we take (joining, leaving, invalid): SPEC 3.5. */
interface Occupied {
  owner: number;
  state: number;
  heartbeat: number;
  changed: number;
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
  readonly #occupied = new Map<number, Occupied>();
  readonly #maxPeriod: number;
  #heartbeat = 0;
  #lastTick = performance.now();

  /** `maxPeriod`: the longest heartbeat period we accept from others (SPEC 3.5, `P`). */
  constructor(ctx: BusContext, period: number, hooks: LivenessHooks, maxPeriod = PERIOD_MAX) {
    this.#ctx = ctx;
    this.#period = period;
    this.#maxPeriod = maxPeriod;
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
      let k = this.#known.get(i);
      if (!k) {
        const peer = copy.owner !== 0 && copy.state === SLOT_STATE.up && copy.published === copy.owner;
        if (!peer || copy.problem || copy.period > this.#maxPeriod) {
          this.#watchOccupied(i, copy, now, stalled);
          continue;
        }
        this.#occupied.delete(i);
        k = this.#up(i, copy, now);
      } else if (!copy.stable) {
        continue; // it changed hands while we copied it: the next scan sees the new owner
      }
      // A known peer is timed while its owner and state stand: `published` only admits a peer.
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

  /**
   * Times a slot that is held but not a peer we take, and frees it when nothing in it changed
   * for three accepted periods: a peer that died joining or leaving, or a slot holding garbage
   * (a period out of range, say), would otherwise stay taken for ever.
   */
  #watchOccupied(slot: number, copy: SlotCopy, now: number, stalled: boolean): void {
    if (copy.owner === 0 || !copy.stable) {
      if (copy.owner === 0) this.#occupied.delete(slot);
      return;
    }
    const o = this.#occupied.get(slot);
    if (!o || o.owner !== copy.owner || o.state !== copy.state || o.heartbeat !== copy.heartbeat || stalled) {
      this.#occupied.set(slot, { owner: copy.owner, state: copy.state, heartbeat: copy.heartbeat, changed: now });
    } else if (now - o.changed > DOWN_AFTER_PERIODS * this.#maxPeriod) {
      this.#occupied.delete(slot);
      releaseSlot(this.#ctx.memory, this.#ctx.geometry, slot, o.owner);
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
