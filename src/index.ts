/**
 * ivshmem for Node.js: QEMU inter-VM shared memory as a message bus.
 *
 * @packageDocumentation
 */
export { IvshmemError, type IvshmemErrorCode } from './errors.js';
export type { Backend, Device, DeviceEvents, Interrupt, InterruptOptions } from './device/index.js';
export { openFile, FileDevice, type OpenFileOptions } from './device/index.js';
export { listDevices, formatDevices, type PciDeviceInfo, type ListDevicesOptions } from './device/index.js';
export { openDevice, type OpenDeviceOptions } from './device/index.js';
export { openVfio, VfioDevice, type OpenVfioOptions } from './device/index.js';
export { openSysfs, SysfsDevice, type OpenSysfsOptions } from './device/index.js';
export { connect, ServerPeerDevice, type ConnectOptions, type RemotePeer } from './device/index.js';
export { IvshmemServer, roundShmSize, type ServerOptions, type ServerPeer, type ServerEvents } from './server/index.js';
export {
  createChannel,
  ChannelReader,
  ChannelWriter,
  ChannelError,
  bytesCodec,
  jsonCodec,
  utf8Codec,
  formatRing,
  ringSize,
  ringCapacityFor,
  recordSize,
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MIN_CAPACITY,
  RING_MAX_CAPACITY,
  RING_VERSION_MAJOR,
  RING_VERSION_MINOR,
  RECORD_HEADER_SIZE,
  RECORD_TYPE_MAX,
  RECORD_TYPE_PADDING,
  deviceWaitStrategy,
  pollingWaitStrategy,
  type Channel,
  type ChannelOptions,
  type Codec,
  type DrainCallback,
  type FormatOptions,
  type RingPlacement,
  type SendOptions,
  type WaitStrategy,
  type RingField,
  type DoorbellDevice,
  type DeviceWaitOptions,
  type PollingOptions,
} from './channel/index.js';
export { attach, Bus, type AttachOptions, type BusEvents, type BusPeer, type IncomingChannel, type PeerDownReason } from './bus/index.js';
export type { Geometry, RegionFormat } from './bus/index.js';
