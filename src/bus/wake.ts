// The wake policy: when a bus uses doorbells and on which vector, and how a channel end waits.
import { deviceWaitStrategy, pollingWaitStrategy, type WaitStrategy } from '../channel/index.js';
import type { Device } from '../device/index.js';
import type { BusPeer } from './types.js';

/** The vector peers ring each other on for bus changes (joins, leaves, new channels). */
export const CONTROL_VECTOR = 0;

/** Doorbells between this peer and the others, or polling where either side has none. */
export class WakePolicy {
  readonly #device: Device;
  readonly #self: BusPeer;

  constructor(device: Device, self: BusPeer) {
    this.#device = device;
    this.#self = self;
  }

  // Both ends must agree: doorbells only when each side can ring the other and be woken.
  #doorbells(other: BusPeer): boolean {
    return this.#self.deviceId !== null && this.#self.vectors > 0 && other.deviceId !== null && other.vectors > 0;
  }

  /** The vector a new channel to `other` in directory entry `entry` is woken on. */
  vectorFor(other: BusPeer, entry: number): number {
    if (!this.#doorbells(other)) return 0;
    const shared = Math.min(this.#self.vectors, other.vectors);
    return shared > 1 ? 1 + (entry % (shared - 1)) : CONTROL_VECTOR;
  }

  /** How an end of a channel with `other` on `vector` waits. */
  waitStrategy(other: BusPeer, vector: number): WaitStrategy {
    if (!this.#doorbells(other) || vector >= this.#self.vectors || vector >= other.vectors) return pollingWaitStrategy();
    return deviceWaitStrategy(this.#device, { peer: other.deviceId!, vector });
  }

  /** Rings `peer`'s control vector, when it has one: something on the bus changed. */
  ring(peer: BusPeer): void {
    if (peer.deviceId === null || this.#device.vectors === 0 || peer.vectors === 0) return;
    try {
      this.#device.ring(peer.deviceId, CONTROL_VECTOR);
    } catch {
      // A closed device: the scan notices and shuts the bus down.
    }
  }
}
