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
  /** `0x42535649` ("IVSB" in memory) in a bus region. */
  magic: 0,
  /** 0: never formatted; `0x59444552` ("REDY"): formatted; anything else: a peer is formatting. */
  state: 4,
  /** Major version in the low 16 bits, minor in the high 16. */
  version: 8, // u16 major | u16 minor << 16
  /** 4096. */
  superblockSize: 12,
  /** Region size in bytes, low 32 bits. */
  regionSizeLo: 16,
  /** Region size in bytes, high 32 bits. */
  regionSizeHi: 20,
  /** 1: pairwise (exactly 2 peers), 2: shared (see {@link PROFILE}). */
  profile: 24,
  /** Number of peer slots, 2..1024. */
  maxPeers: 28,
  /** Where the peer table starts (4096). */
  tableOffset: 32,
  /** Bytes per peer slot (256). */
  slotSize: 36,
  /** First byte of the sections, a multiple of 4096. */
  sectionsOffset: 40,
  /** Bytes per section, a multiple of 4096. */
  sectionSize: 44,
  /** Channel directory entries per section, 1..1024. */
  entries: 48,
  /** Bytes per directory entry (128). */
  entrySize: 52,
  /** Random, new at every format. */
  generation: 56,
} as const;

/** Profiles of a region. */
export const PROFILE = {
  /** Exactly two peers. */
  pairwise: 1,
  /** Up to `maxPeers` peers. */
  shared: 2,
} as const;

/** Peer slot, byte offsets from the slot's start. Written only by its owner, except `owner`. */
export const SLOT = {
  /** Session of the peer holding the slot; 0 = free. The one word others may CAS (join, reclaim). */
  owner: 0,
  /** {@link SLOT_STATE}, written by the owner. */
  state: 4,
  /** The owner's ivshmem peer ID (0..65535), or {@link NO_DOORBELL} without doorbells. */
  deviceId: 8,
  /** Vectors the owner can be woken on (0: it polls). */
  vectors: 12,
  /** Incremented by the owner once per period. */
  heartbeat: 16,
  /** The owner's heartbeat period in ms, 10..60000. */
  period: 20,
  /** Bumped after every change to the owner's directory, so readers rescan only on change. */
  directoryGeneration: 24,
  /** Bytes of the owner's name, 0..64. */
  nameLength: 28,
  /** The owner's name, UTF-8. */
  name: 32,
  /** The owner's session, stored last when joining: the slot's fields are the owner's own once it equals `owner`. */
  published: 96,
} as const;

/** Slot states. */
export const SLOT_STATE = {
  /** Nobody holds the slot. */
  free: 0,
  /** Its owner is filling it in. */
  joining: 1,
  /** Its owner is on the bus. */
  up: 2,
  /** Its owner is leaving. */
  leaving: 3,
} as const;

/** Directory entry, byte offsets from the entry's start. Written only by the section's owner. */
export const ENTRY = {
  /** {@link ENTRY_STATE}. */
  state: 0,
  /** Changes every time the entry is reused. */
  serial: 4,
  /** The reader's slot. */
  destinationSlot: 8,
  /** The reader's session: a restarted reader never gets an old channel. */
  destinationSession: 12,
  /** Region offset of the ring, 8-aligned, inside the section's ring area. */
  ringOffset: 16,
  /** Bytes of the ring, header included. */
  ringSize: 20,
  /** The vector both ends ring each other on. */
  vector: 24,
  /** Bytes of the channel's name, 1..64. */
  nameLength: 28,
  /** The channel's name, UTF-8. */
  name: 32,
} as const;

/** Entry states. */
export const ENTRY_STATE = {
  /** Unused. */
  free: 0,
  /** A channel is offered or in use. */
  open: 1,
  /** The channel ended. */
  closed: 2,
} as const;

/** Heartbeat periods a peer may declare, in milliseconds. */
export const PERIOD_MIN = 10;
export const PERIOD_MAX = 60_000;
