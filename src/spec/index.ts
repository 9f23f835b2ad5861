/**
 * `ivshmem/spec`: the numbers of the formats and protocols, for other implementations (SPEC.md
 * is the normative text; these are its constants as this package uses them).
 *
 * - the ring ("Ring"): header field offsets, sizes, record types, the doorbell limit;
 * - the bus region ("Region"): superblock, peer slot and directory entry offsets and states;
 * - the ivshmem-server protocol: version, vector and peer ID limits;
 * - the ivshmem PCI device: IDs, register offsets, the doorbell word.
 *
 * @module
 */
export {
  DOORBELL_BURST,
  DOORBELL_EVERY_MS,
  RECORD_HEADER_SIZE,
  RECORD_TYPE_MAX,
  RECORD_TYPE_PADDING,
  RING_FIELDS,
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MAX_CAPACITY,
  RING_MIN_CAPACITY,
  RING_VERSION_MAJOR,
  RING_VERSION_MINOR,
  isRingCapacity,
  recordSize,
  ringCapacityFor,
  ringSize,
} from '../channel/index.js';
export {
  ENTRIES_LIMIT,
  ENTRY,
  ENTRY_SIZE,
  ENTRY_STATE,
  MAX_PEERS_LIMIT,
  NAME_MAX,
  NO_DOORBELL,
  PERIOD_MAX,
  PERIOD_MIN,
  PROFILE,
  REGION_MAGIC,
  REGION_MAX,
  REGION_READY,
  REGION_VERSION_MAJOR,
  REGION_VERSION_MINOR,
  SB,
  SLOT,
  SLOT_SIZE,
  SLOT_STATE,
  SUPERBLOCK_SIZE,
} from '../bus/index.js';
export { MAX_VECTORS, PEER_IDS, PROTOCOL_VERSION, SHM_MESSAGE } from '../protocol/index.js';
export { DOORBELL, IVPOSITION, IVSHMEM_DEVICE, IVSHMEM_VENDOR, doorbellValue } from '../device/index.js';
