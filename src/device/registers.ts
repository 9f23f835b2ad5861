import { native, type Native } from '../native.js';

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

/**
 * A writer for the doorbell register of a mapped BAR0 (`registers`, the whole window).
 *
 * On x86 it is a plain store through a `Uint32Array`, without the call into the addon
 * (measured: a JS→native call is most of `ring()`'s cost, ~17 µs in a TCG guest against
 * 0.4 µs for the store itself). That is safe for this register because:
 * - the register acts on a write of exactly 4 bytes at offset 12, and V8 stores a `Uint32Array`
 *   element with one aligned 32-bit store in every tier: the interpreter's and baseline
 *   compiler's store builtins, Maglev and TurboFan emit one 32-bit move for a Uint32 element,
 *   and the runtime fallback (elements.cc `SetImpl`) makes a relaxed atomic store for an
 *   aligned element. Never `TypedArray#set` or `DataView` (copies that may be split), and
 *   never `Atomics.store`, which is a locked exchange on x86: a read-modify-write of the
 *   register that emulators carry out as a read plus a write.
 * - x86 keeps stores in program order (TSO), so the ring's earlier tail store is visible
 *   before the doorbell reaches the peer, which is what the sleeping protocol needs.
 * Elsewhere (arm64: stores to different addresses may be reordered) it goes through the addon
 * as before, and so do injected `calls`.
 */
export function doorbellWriter(registers: ArrayBuffer, calls: Pick<Native, 'write32'>): (value: number) => void {
  // Injected calls (tests, fakes) see every write; only the real mapping gets the direct store.
  if (calls === native && (process.arch === 'x64' || process.arch === 'ia32') && registers.byteLength >= DOORBELL + 4) {
    const words = new Uint32Array(registers, 0, (DOORBELL >>> 2) + 1);
    const at = DOORBELL >>> 2;
    return (value) => {
      words[at] = value;
    };
  }
  return (value) => calls.write32(registers, DOORBELL, value);
}
