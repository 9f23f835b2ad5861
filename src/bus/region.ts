import { randomInt } from 'node:crypto';
import { ivshmemError, throwIfAborted, type IvshmemError, type IvshmemErrorCode } from '../errors.js';
import {
  ENTRIES_LIMIT,
  ENTRY_SIZE,
  MAX_PEERS_LIMIT,
  PROFILE,
  REGION_MAGIC,
  REGION_MAX,
  REGION_READY,
  REGION_VERSION_MAJOR,
  REGION_VERSION_MINOR,
  SB,
  SLOT_SIZE,
  SUPERBLOCK_SIZE,
} from './layout.js';

/** How a new region is laid out (only the peer that formats it uses these). */
export interface RegionFormat {
  /** `'pairwise'`: two peers; `'shared'` (default): many, up to `maxPeers`. */
  profile?: 'pairwise' | 'shared';
  /** Peer slots (default 16 for shared, 2 for pairwise; at most 1024). */
  maxPeers?: number;
  /** Channel directory entries per peer (default 32). */
  entries?: number;
}

/** The region's geometry, copied once from the superblock and validated. */
export interface Geometry {
  /** Byte offset of the region in the shared memory (attach's `offset`); every offset below includes it. */
  base: number;
  /** Bytes of the region the bus uses. */
  regionSize: number;
  /** `pairwise`: exactly two peers; `shared`: up to `maxPeers`. */
  profile: 'pairwise' | 'shared';
  /** Slots in the peer table. */
  maxPeers: number;
  /** Where the peer table starts. */
  tableOffset: number;
  /** Where the channel sections start. */
  sectionsOffset: number;
  /** Bytes of each section. */
  sectionSize: number;
  /** Channel directory entries per section (channels a peer can open at once). */
  entries: number;
  /** Random, new at every format: tells a re-formatted region from the one we attached to. */
  generation: number;
}

function regionError(message: string, code: IvshmemErrorCode = 'ERR_IVSHMEM_REGION'): IvshmemError {
  return ivshmemError(code, message);
}

/** Byte offset of slot `i` in the peer table. */
export function slotOffset(g: Geometry, i: number): number {
  return g.tableOffset + i * SLOT_SIZE;
}

/** Byte offset of slot `i`'s section. */
export function sectionOffset(g: Geometry, i: number): number {
  return g.sectionsOffset + i * g.sectionSize;
}

/** Byte offset of entry `e` of slot `i`'s channel directory. */
export function entryOffset(g: Geometry, i: number, e: number): number {
  return sectionOffset(g, i) + e * ENTRY_SIZE;
}

/** Where the rings of slot `i`'s section may lie: [start, end). */
export function ringArea(g: Geometry, i: number): [number, number] {
  const start = sectionOffset(g, i) + g.entries * ENTRY_SIZE;
  return [start, sectionOffset(g, i) + g.sectionSize];
}

/**
 * Where a region lies in the shared memory: attach's `offset` and `size`, for a bus that shares
 * a BAR with other data. Every peer passes the same values; the bus never touches bytes
 * outside [offset, offset + size).
 */
export interface RegionPlacement {
  /** Byte offset of the region, a multiple of 4096 (default 0). */
  offset?: number;
  /** Bytes of the region (default: to the end of the shared memory). */
  size?: number;
}

// Offsets in the superblock and the directory are relative to the region; Geometry's are
// absolute (they include `base`), so that nothing else has to add it.
function plan(regionSize: number, format: RegionFormat): Omit<Geometry, 'generation' | 'base'> {
  const profile = format.profile ?? 'shared';
  if (profile !== 'shared' && profile !== 'pairwise') throw regionError(`profile must be 'shared' or 'pairwise', got ${String(profile)}`, 'ERR_IVSHMEM_INVALID_ARGUMENT');
  const maxPeers = format.maxPeers ?? (profile === 'pairwise' ? 2 : 16);
  if (!Number.isInteger(maxPeers) || maxPeers < 2 || maxPeers > MAX_PEERS_LIMIT || (profile === 'pairwise' && maxPeers !== 2)) {
    throw regionError(`maxPeers must be an integer 2..${MAX_PEERS_LIMIT} (exactly 2 for pairwise), got ${String(maxPeers)}`, 'ERR_IVSHMEM_INVALID_ARGUMENT');
  }
  const entries = format.entries ?? 32;
  if (!Number.isInteger(entries) || entries < 1 || entries > ENTRIES_LIMIT) {
    throw regionError(`entries must be an integer 1..${ENTRIES_LIMIT}, got ${String(entries)}`, 'ERR_IVSHMEM_INVALID_ARGUMENT');
  }
  const tableOffset = SUPERBLOCK_SIZE;
  const sectionsOffset = align(tableOffset + maxPeers * SLOT_SIZE, 4096);
  const sectionSize = Math.floor((regionSize - sectionsOffset) / maxPeers / 4096) * 4096;
  if (sectionSize < entries * ENTRY_SIZE + 4096) {
    throw regionError(
      `a ${regionSize}-byte region is too small for ${maxPeers} peers with ${entries} channel entries each: use a larger region, fewer peers or fewer entries`,
      'ERR_IVSHMEM_SIZE',
    );
  }
  return { regionSize, profile, maxPeers, tableOffset, sectionsOffset, sectionSize, entries };
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * Formats an empty region or joins a formatted one, and returns its validated geometry. Only a
 * region whose superblock is all zero is formatted; anything else that is not a version 1
 * region is refused, never rewritten.
 */
export async function openRegion(
  memory: ArrayBuffer,
  format: RegionFormat,
  options: { timeout?: number; signal?: AbortSignal } & RegionPlacement = {},
): Promise<Geometry> {
  const { base, size } = regionPlacement(memory, options);
  if (size < SUPERBLOCK_SIZE * 2) throw regionError(`the region is ${size} bytes: too small for a bus`, 'ERR_IVSHMEM_SIZE');
  const regionSize = Math.min(size, REGION_MAX);
  const sb = new Uint32Array(memory, base, SUPERBLOCK_SIZE / 4);
  const deadline = Date.now() + (options.timeout ?? 5000);
  for (;;) {
    throwIfAborted(options.signal);
    const magic = Atomics.load(sb, SB.magic / 4);
    const state = Atomics.load(sb, SB.state / 4);
    if (state === REGION_READY && magic === REGION_MAGIC) return validate(sb, base, regionSize);
    if (magic === 0 && state === 0) {
      const token = randomToken();
      if (Atomics.compareExchange(sb, SB.state / 4, 0, token) === 0) return formatRegion(memory, sb, base, regionSize, format);
      continue;
    }
    if (magic !== 0 && magic !== REGION_MAGIC) {
      throw regionError(
        `the shared memory holds something other than an ivshmem bus region (magic 0x${magic.toString(16).padStart(8, '0')}): refusing to format over it. Clear it first if it is yours to clear.`,
      );
    }
    // Another peer is formatting: it takes microseconds, unless it died doing it, or the word
    // that says so is not ours at all (memory used for something else before).
    if (Date.now() > deadline) {
      const where = base === 0 ? 'the first 4 KiB of the shared memory' : `the 4 KiB at offset ${base}`;
      throw regionError(
        `no bus region at offset ${base}: the magic word is 0 but the formatting-state word holds 0x${state.toString(16).padStart(8, '0')}, unchanged for ${options.timeout ?? 5000} ms. ` +
          `Either the memory holds leftovers of something else (a bus is formatted only over zeroed memory: zero ${where}, or pass attach() an offset past what else lives there), ` +
          `or a peer died while formatting it (then zero ${where} too).`,
      );
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

function randomToken(): number {
  let t: number;
  do t = randomInt(1, 2 ** 32 - 1);
  while (t === REGION_READY);
  return t;
}

function regionPlacement(memory: ArrayBuffer, place: RegionPlacement): { base: number; size: number } {
  const base = place.offset ?? 0;
  if (!Number.isSafeInteger(base) || base < 0 || base % 4096 !== 0 || base >= memory.byteLength) {
    throw regionError(`offset must be a multiple of 4096 inside the ${memory.byteLength}-byte shared memory, got ${String(place.offset)}`, 'ERR_IVSHMEM_INVALID_ARGUMENT');
  }
  const size = place.size ?? memory.byteLength - base;
  if (!Number.isSafeInteger(size) || size <= 0 || base + size > memory.byteLength) {
    throw regionError(`offset ${base} + size ${String(place.size)} does not fit in the ${memory.byteLength}-byte shared memory`, 'ERR_IVSHMEM_INVALID_ARGUMENT');
  }
  return { base, size };
}

function formatRegion(memory: ArrayBuffer, sb: Uint32Array, base: number, regionSize: number, format: RegionFormat): Geometry {
  let g: Omit<Geometry, 'generation' | 'base'>;
  try {
    g = plan(regionSize, format);
  } catch (error) {
    Atomics.store(sb, SB.state / 4, 0);
    throw error;
  }
  const generation = randomToken();
  // Peers may have scribbled before the region was formatted: start from clean tables.
  new Uint8Array(memory, base + SUPERBLOCK_SIZE, g.sectionsOffset - SUPERBLOCK_SIZE).fill(0);
  for (let i = 0; i < g.maxPeers; i++) new Uint8Array(memory, base + g.sectionsOffset + i * g.sectionSize, g.entries * ENTRY_SIZE).fill(0);
  const w = (field: number, value: number): void => void (sb[field / 4] = value >>> 0);
  w(SB.version, REGION_VERSION_MAJOR | (REGION_VERSION_MINOR << 16));
  w(SB.superblockSize, SUPERBLOCK_SIZE);
  w(SB.regionSizeLo, regionSize % 2 ** 32);
  w(SB.regionSizeHi, Math.floor(regionSize / 2 ** 32));
  w(SB.profile, PROFILE[g.profile]);
  w(SB.maxPeers, g.maxPeers);
  w(SB.tableOffset, g.tableOffset);
  w(SB.slotSize, SLOT_SIZE);
  w(SB.sectionsOffset, g.sectionsOffset);
  w(SB.sectionSize, g.sectionSize);
  w(SB.entries, g.entries);
  w(SB.entrySize, ENTRY_SIZE);
  w(SB.generation, generation);
  Atomics.store(sb, SB.magic / 4, REGION_MAGIC);
  // Publishes everything above (a seq-cst store).
  Atomics.store(sb, SB.state / 4, REGION_READY);
  return { ...g, base, tableOffset: base + g.tableOffset, sectionsOffset: base + g.sectionsOffset, generation };
}

function validate(sb: Uint32Array, base: number, regionSize: number): Geometry {
  // One copy of the superblock; only the copy is looked at.
  const c = Uint32Array.from(sb.subarray(0, 16));
  const at = (field: number): number => c[field / 4]!;
  const version = at(SB.version);
  const major = version & 0xffff;
  const minor = version >>> 16;
  if (major !== REGION_VERSION_MAJOR) {
    throw regionError(
      `the region was formatted with bus layout version ${major}.${minor}; this library reads version ${REGION_VERSION_MAJOR}.x. Use a matching version of the library on every peer.`,
      'ERR_IVSHMEM_REGION_VERSION',
    );
  }
  const bad = (what: string): never => {
    throw regionError(`the region's superblock is corrupt (${what}): refusing to use it`);
  };
  const size = at(SB.regionSizeLo) + at(SB.regionSizeHi) * 2 ** 32;
  if (size !== regionSize) bad(`region size ${size}, but the shared memory is ${regionSize} bytes`);
  if (at(SB.superblockSize) !== SUPERBLOCK_SIZE) bad('superblock size');
  if (at(SB.slotSize) !== SLOT_SIZE || at(SB.entrySize) !== ENTRY_SIZE) bad('slot or entry size');
  const profile = at(SB.profile) === PROFILE.pairwise ? 'pairwise' : at(SB.profile) === PROFILE.shared ? 'shared' : bad(`profile ${at(SB.profile)}`);
  const maxPeers = at(SB.maxPeers);
  const entries = at(SB.entries);
  const tableOffset = at(SB.tableOffset);
  const sectionsOffset = at(SB.sectionsOffset);
  const sectionSize = at(SB.sectionSize);
  if (maxPeers < 2 || maxPeers > MAX_PEERS_LIMIT || (profile === 'pairwise' && maxPeers !== 2)) bad(`maxPeers ${maxPeers}`);
  if (entries < 1 || entries > ENTRIES_LIMIT) bad(`entries ${entries}`);
  if (tableOffset !== SUPERBLOCK_SIZE) bad(`peer table offset ${tableOffset}`);
  if (sectionsOffset % 4096 !== 0 || sectionsOffset < tableOffset + maxPeers * SLOT_SIZE) bad(`sections offset ${sectionsOffset}`);
  if (sectionSize % 4096 !== 0 || sectionSize < entries * ENTRY_SIZE + 4096) bad(`section size ${sectionSize}`);
  if (sectionsOffset + maxPeers * sectionSize > regionSize) bad('sections run past the end of the region');
  return { base, regionSize, profile, maxPeers, tableOffset: base + tableOffset, sectionsOffset: base + sectionsOffset, sectionSize, entries, generation: at(SB.generation) };
}
