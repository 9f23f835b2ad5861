import type { GuestDevice } from './guest.js';

/**
 * Inside a lab guest: the ivshmem devices the lab gave this guest, with their PCI addresses and
 * (for doorbell devices) the IDs the server assigned. Empty outside a lab guest.
 */
export function guestDevices(): GuestDevice[] {
  const text = process.env.IVSHMEM_LAB_DEVICES;
  return text ? (JSON.parse(text) as GuestDevice[]) : [];
}
