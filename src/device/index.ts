/**
 * Devices: one {@link Device} interface over every way to reach ivshmem memory — a guest's PCI
 * device through VFIO (interrupts) or sysfs (no interrupts), a host-side peer of an
 * ivshmem-server, or a plain shared-memory file — and discovery of PCI devices.
 *
 * @module
 */
export type { Backend, Device, DeviceEvents, Interrupt, InterruptOptions } from './types.js';
export { openFile, FileDevice, type OpenFileOptions } from './file.js';
export { listDevices, formatDevices, normalizeAddress, type PciDeviceInfo, type ListDevicesOptions } from './discover.js';
export { openDevice, type OpenDeviceOptions } from './open.js';
export { openVfio, VfioDevice, type OpenVfioOptions } from './vfio.js';
export { openSysfs, SysfsDevice, type OpenSysfsOptions } from './sysfs.js';
export { connect, ServerPeerDevice, type ConnectOptions, type RemotePeer } from './server-peer.js';
export type { SealedMemoryPolicy } from '../protocol/index.js';
export { IVSHMEM_DEVICE, IVSHMEM_VENDOR } from './discover.js';
export { DOORBELL, IVPOSITION, doorbellValue } from './registers.js';
