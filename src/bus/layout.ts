// The bus region's wire format, version 1. SPEC.md ("Region") is the normative text; these are
// its byte offsets, and the two must change together. Every value is a little-endian u32.

/** `"IVSB"` in memory order, read as a little-endian u32. */
export const REGION_MAGIC = 0x42535649;
/** Superblock `state` once formatting has finished: `"REDY"`. */
export const REGION_READY = 0x59444552;
export const REGION_VERSION_MAJOR = 1;
/** 1.1: rules only (SPEC 5); a 1.0 peer reads a 1.1 region unchanged. */
export const REGION_VERSION_MINOR = 1;

export const SUPERBLOCK_SIZE = 4096;
export const SLOT_SIZE = 256;
export const ENTRY_SIZE = 128;
export const NAME_MAX = 64;
/** Regions are addressed with u32 offsets: the bus uses at most the first 4 GiB - 4 KiB. */
export const REGION_MAX = 2 ** 32 - 4096;
export const MAX_PEERS_LIMIT = 1024;
export const ENTRIES_LIMIT = 1024;
/** Device ID of a peer without doorbells (file backend). */
export const NO_DOORBELL = 0xffffffff;

/** Superblock, byte offsets. */
export const SB = {
  magic: 0,
  state: 4,
  version: 8, // u16 major | u16 minor << 16
  superblockSize: 12,
  regionSizeLo: 16,
  regionSizeHi: 20,
  profile: 24,
  maxPeers: 28,
  tableOffset: 32,
  slotSize: 36,
  sectionsOffset: 40,
  sectionSize: 44,
  entries: 48,
  entrySize: 52,
  generation: 56,
} as const;

/** Profiles of a region. */
export const PROFILE = { pairwise: 1, shared: 2 } as const;

/** Peer slot, byte offsets from the slot's start. Written only by its owner, except `owner`. */
export const SLOT = {
  /** Session of the peer holding the slot; 0 = free. The one word others may CAS (join, reclaim). */
  owner: 0,
  state: 4,
  deviceId: 8,
  vectors: 12,
  heartbeat: 16,
  period: 20,
  /** Bumped after every change to the owner's directory, so readers rescan only on change. */
  directoryGeneration: 24,
  nameLength: 28,
  name: 32,
  /** The owner's session, stored last when joining: the slot's fields are the owner's own once it equals `owner`. */
  published: 96,
} as const;

/** Slot states. */
export const SLOT_STATE = { free: 0, joining: 1, up: 2, leaving: 3 } as const;

/** Directory entry, byte offsets from the entry's start. Written only by the section's owner. */
export const ENTRY = {
  state: 0,
  serial: 4,
  destinationSlot: 8,
  destinationSession: 12,
  ringOffset: 16,
  ringSize: 20,
  vector: 24,
  nameLength: 28,
  name: 32,
} as const;

/** Entry states. */
export const ENTRY_STATE = { free: 0, open: 1, closed: 2 } as const;

/** Heartbeat periods a peer may declare, in milliseconds. */
export const PERIOD_MIN = 10;
export const PERIOD_MAX = 60_000;
