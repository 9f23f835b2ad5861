import { inspectRing, RING_HEADER_SIZE, RING_MIN_CAPACITY, type RingSnapshot } from '../channel/index.js';
import { ENTRY_STATE, REGION_MAGIC, REGION_READY, SB, SLOT_STATE, SUPERBLOCK_SIZE } from './layout.js';
import { openRegion, type Geometry } from './region.js';
import { readEntry, readSlot } from './slots.js';

/** One directory entry with its ring. */
export interface ChannelSnapshot {
  entry: number;
  state: 'open' | 'closed';
  name: string;
  toSlot: number;
  toSession: number;
  vector: number;
  ringOffset: number;
  ringSize: number;
  problem: string | null;
  ring: RingSnapshot | null;
}

/** One peer slot. */
export interface PeerSnapshot {
  slot: number;
  session: number;
  state: 'joining' | 'up' | 'leaving' | 'free' | 'invalid';
  name: string;
  deviceId: number | null;
  vectors: number;
  heartbeat: number;
  period: number;
  problem: string | null;
  channels: ChannelSnapshot[];
}

/** What {@link inspectRegion} sees. */
export interface RegionSnapshot {
  state: 'empty' | 'formatting' | 'ready' | 'foreign';
  geometry: Geometry | null;
  error: string | null;
  peers: PeerSnapshot[];
}

const STATES = ['free', 'joining', 'up', 'leaving'] as const;

/** Reads a bus region without changing a byte of it: for `ivshmem dump` and debugging. */
export async function inspectRegion(memory: ArrayBuffer): Promise<RegionSnapshot> {
  if (memory.byteLength < SUPERBLOCK_SIZE) {
    return { state: 'foreign', geometry: null, error: `${memory.byteLength} bytes cannot hold a region's ${SUPERBLOCK_SIZE}-byte superblock`, peers: [] };
  }
  const sb = new Uint32Array(memory, 0, SUPERBLOCK_SIZE / 4);
  const magic = Atomics.load(sb, SB.magic / 4);
  const state = Atomics.load(sb, SB.state / 4);
  if (magic === 0 && state === 0) return { state: 'empty', geometry: null, error: null, peers: [] };
  if (magic !== REGION_MAGIC) return { state: 'foreign', geometry: null, error: `magic 0x${magic.toString(16)}`, peers: [] };
  if (state !== REGION_READY) return { state: 'formatting', geometry: null, error: null, peers: [] };
  let geometry: Geometry;
  try {
    // A ready region is only validated, never written.
    geometry = await openRegion(memory, {}, { timeout: 0 });
  } catch (error) {
    return { state: 'ready', geometry: null, error: (error as Error).message, peers: [] };
  }
  const peers: PeerSnapshot[] = [];
  for (let i = 0; i < geometry.maxPeers; i++) {
    const s = readSlot(memory, geometry, i);
    if (s.owner === 0 && s.state === SLOT_STATE.free) continue;
    const channels: ChannelSnapshot[] = [];
    for (let e = 0; e < geometry.entries; e++) {
      const entry = readEntry(memory, geometry, i, e, RING_HEADER_SIZE + RING_MIN_CAPACITY);
      if (entry.state !== ENTRY_STATE.open && entry.state !== ENTRY_STATE.closed) continue;
      channels.push({
        entry: e,
        state: entry.state === ENTRY_STATE.open ? 'open' : 'closed',
        name: entry.name,
        toSlot: entry.destinationSlot,
        toSession: entry.destinationSession,
        vector: entry.vector,
        ringOffset: entry.ringOffset,
        ringSize: entry.ringSize,
        problem: entry.problem,
        ring: entry.problem ? null : inspectRing(memory, entry.ringOffset),
      });
    }
    peers.push({
      slot: i,
      session: s.owner,
      state: s.problem ? 'invalid' : (STATES[s.state] ?? 'invalid'),
      name: s.name,
      deviceId: s.deviceId,
      vectors: s.vectors,
      heartbeat: s.heartbeat,
      period: s.period,
      problem: s.problem,
      channels,
    });
  }
  return { state: 'ready', geometry, error: null, peers };
}

/** The snapshot as text for people. */
export function formatRegion(snapshot: RegionSnapshot): string {
  if (snapshot.state === 'empty') return 'region: empty (never formatted as a bus)';
  if (snapshot.state === 'foreign') return `region: not an ivshmem bus region (${snapshot.error})`;
  if (snapshot.state === 'formatting') return 'region: being formatted';
  if (!snapshot.geometry) return `region: refused: ${snapshot.error}`;
  const g = snapshot.geometry;
  const lines = [
    `region: ${g.regionSize} bytes, ${g.profile}, ${g.maxPeers} peer slots, sections of ${g.sectionSize} bytes with ${g.entries} channel entries, generation 0x${g.generation.toString(16)}`,
  ];
  if (snapshot.peers.length === 0) lines.push('peers: none');
  for (const p of snapshot.peers) {
    const id = p.deviceId === null ? 'no doorbell' : `ivshmem ID ${p.deviceId}, ${p.vectors} vector(s)`;
    lines.push(`slot ${p.slot}: '${p.name}' ${p.state}, session 0x${p.session.toString(16)}, ${id}, heartbeat ${p.heartbeat} every ${p.period} ms${p.problem ? ` [invalid: ${p.problem}]` : ''}`);
    for (const c of p.channels) {
      const r = c.ring;
      const ring = !r
        ? `[invalid: ${c.problem}]`
        : `${r.valid ? '' : '[bad ring magic] '}head ${r.head} tail ${r.tail} fill ${r.fill}/${r.capacity}${r.writerClosed ? ' writer-closed' : ''}${r.readerClosed ? ' reader-closed' : ''}${r.producerSleeping ? ' producer-sleeping' : ''}${r.consumerSleeping ? ' consumer-sleeping' : ''}`;
      lines.push(`  channel '${c.name}' -> slot ${c.toSlot} (${c.state}, vector ${c.vector}, ring at ${c.ringOffset}+${c.ringSize}): ${ring}`);
    }
  }
  return lines.join('\n');
}
