import { fail } from '../errors.js';
import { resolveDevice, type ListDevicesOptions } from './discover.js';
import { openSysfs, type SysfsDevice } from './sysfs.js';
import { openVfio, type VfioDevice } from './vfio.js';

/** Options of {@link openDevice}. */
export interface OpenDeviceOptions extends ListDevicesOptions {
  /**
   * `vfio`: memory, doorbells and interrupts (needs vfio-pci and an IOMMU). `sysfs`: memory and
   * doorbells only. Default: `vfio` for a doorbell device that is bound to vfio-pci or when
   * `bind` is set, `sysfs` otherwise.
   */
  backend?: 'vfio' | 'sysfs';
  /** vfio: bind the device to vfio-pci if needed, and restore its driver on close. */
  bind?: boolean;
  /** sysfs: map the memory write-combined (`resource2_wc`). */
  writeCombine?: boolean;
}

/**
 * Opens an ivshmem device inside a Linux guest. Without an address, the first ivshmem device
 * (see {@link listDevices}). Needs root.
 *
 * @example
 * ```ts
 * const dev = openDevice(undefined, { backend: 'vfio', bind: true });
 * console.log(`I am peer ${dev.id}, ${dev.size} bytes shared`);
 * dev.ring(0, 0);
 * for await (const { vector, count } of dev.interrupts()) console.log(vector, count);
 * ```
 */
export function openDevice(address?: string, options: OpenDeviceOptions = {}): VfioDevice | SysfsDevice {
  const { backend } = options;
  if (backend !== undefined && backend !== 'vfio' && backend !== 'sysfs') {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `openDevice(): backend must be 'vfio' or 'sysfs', got ${String(backend)}`);
  }
  if (address !== undefined && (typeof address !== 'string' || address === '')) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `openDevice(): address must be a PCI address such as 0000:00:03.0, got ${String(address)}`);
  }
  const info = resolveDevice(address, options);
  const chosen = backend ?? (info.kind === 'doorbell' && (options.bind || info.driver === 'vfio-pci') ? 'vfio' : 'sysfs');
  return chosen === 'vfio' ? openVfio(info.address, options) : openSysfs(info.address, options);
}
