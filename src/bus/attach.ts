import { randomInt } from 'node:crypto';
import { RING_HEADER_SIZE, RING_MIN_CAPACITY } from '../channel/index.js';
import type { Device } from '../device/index.js';
import { fail } from '../errors.js';
import { checkCapacity } from './allocator.js';
import { Bus } from './bus.js';
import { NAME_MAX, PERIOD_MAX, PERIOD_MIN } from './layout.js';
import { openRegion, ringArea, type RegionFormat, type RegionPlacement } from './region.js';
import { claimSlot, nameBytes, publishSlot } from './slots.js';
import type { BusPeer } from './types.js';

/** Options of {@link attach}. */
export interface AttachOptions extends RegionFormat, RegionPlacement {
  /** This peer's name, as others see it (1..64 bytes of UTF-8). */
  name: string;
  /**
   * Heartbeat period in milliseconds, 10..60000 (default 1000). This peer beats twice a period;
   * a peer silent for three of its periods is down, so stalls of up to 2.5 periods are survived,
   * and a dead peer is noticed within 3 periods + 2 scans (a scan every quarter of the observer's
   * period) after its last beat.
   * Each peer beats from its event loop: under TCG emulation (no KVM) every JavaScript step
   * costs ~15× more and stalls of seconds happen, so use 5000 or more there. A thread blocked
   * in `receiveSync` beats nothing: keep the bus in another thread.
   */
  heartbeat?: number;
  /**
   * Data-area bytes of the channels this peer opens, a power of two. Default: 64 KiB, or less so
   * that at least four rings fit in this peer's section.
   */
  channelCapacity?: number;
  /**
   * The longest heartbeat period, in milliseconds, this peer accepts from others (10..60000,
   * default 60000). A slot declaring more is not taken as a peer, and is freed when it shows no
   * change for three times this (SPEC 3.5): lower it to find dead peers sooner, and give every
   * peer of the bus a period at most this.
   */
  maxPeerHeartbeat?: number;
  /** How long to wait for another peer that is formatting the region (default 5000 ms). */
  formatTimeout?: number;
  /** Gives up waiting for another peer's formatting. */
  signal?: AbortSignal;
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
  const maxPeerPeriod = options.maxPeerHeartbeat ?? PERIOD_MAX;
  if (!Number.isInteger(maxPeerPeriod) || maxPeerPeriod < PERIOD_MIN || maxPeerPeriod > PERIOD_MAX) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `attach(): maxPeerHeartbeat must be ${PERIOD_MIN}..${PERIOD_MAX} ms, got ${String(maxPeerPeriod)}`);
  }
  if (options.channelCapacity !== undefined) checkCapacity(options.channelCapacity, 'attach(): channelCapacity');
  if (device.closed) fail('ERR_IVSHMEM_CLOSED', 'attach(): the device is closed');

  const memory = device.memory;
  const geometry = await openRegion(memory, options, { timeout: options.formatTimeout, signal: options.signal, offset: options.offset, size: options.size });
  const [areaStart, areaEnd] = ringArea(geometry, 0);
  const quarter = (areaEnd - areaStart) / 4 - RING_HEADER_SIZE;
  const capacity = options.channelCapacity ?? Math.max(RING_MIN_CAPACITY, Math.min(65536, 2 ** Math.floor(Math.log2(quarter))));
  const deviceId = device.vectors > 0 ? device.id : null;
  const vectors = device.receivesInterrupts ? device.vectors : 0;
  let session: number;
  do session = randomInt(1, 2 ** 32 - 1);
  while (session === 0);

  const slot = claimSlot(memory, geometry, session, deviceId);
  if (slot < 0) {
    fail('ERR_IVSHMEM_BUS_FULL', `all ${geometry.maxPeers} peer slots of the region are taken: wait for a peer to leave (dead peers are freed within three of their heartbeat periods), or format the region for more peers`);
  }
  publishSlot(memory, geometry, slot, session, { deviceId, vectors, period, name });

  const self: BusPeer = Object.freeze({ slot, session, name, deviceId, vectors });
  const bus = new Bus(device, geometry, self, { period, capacity, maxPeerPeriod });
  bus.start();
  return bus;
}
