// The ivshmem BAR0 registers and the PCI config fields the guest backends touch
// (ivshmem-spec; PCI Local Bus spec). One place for the numbers both backends use.

/** BAR0: this peer's ID (read-only). */
export const IVPOSITION = 0x08;
/** BAR0: write `(peer << 16) | vector` to ring `peer`. */
export const DOORBELL = 0x0c;
/** Config space: the 16-bit command register. */
export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;

/** The doorbell register's value for ringing `peer` on `vector` (both already range-checked). */
export function doorbellValue(peer: number, vector: number): number {
  return ((peer << 16) | vector) >>> 0;
}
