/** The protocol version the server sends first; the only one there is. */
export const PROTOCOL_VERSION = 0;

/** Interrupt vectors per peer: QEMU's ivshmem-doorbell takes at most 64 MSI-X vectors. */
export const MAX_VECTORS = 64;

/** Peer IDs are 16 bits (the doorbell register's upper half): 65536 of them. */
export const PEER_IDS = 0x10000;

/** Whether `value` is a peer ID the protocol can carry. */
export function isPeerId(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < PEER_IDS;
}

/** Whether `value` is a vector count the protocol allows (1..{@link MAX_VECTORS}). */
export function isVectorCount(value: number): boolean {
  return Number.isInteger(value) && value >= 1 && value <= MAX_VECTORS;
}
