/**
 * ivshmem for Node.js: QEMU inter-VM shared memory as a message bus.
 *
 * - Devices: {@link openDevice} (a guest's PCI device), {@link connect} (a host peer of an
 *   ivshmem-server), {@link openFile} (a shared-memory file), {@link listDevices}.
 * - {@link IvshmemServer}: a QEMU-compatible ivshmem-server.
 * - Channels: typed one-way rings in shared memory ({@link ChannelWriter}, {@link ChannelReader}).
 * - The bus: named peers and channels on one region ({@link attach}).
 *
 * The formats' constants are in `ivshmem/spec`; the QEMU lab for tests in `ivshmem/testing`.
 *
 * @packageDocumentation
 */
export { AbortError, IvshmemError, type ErrnoCode, type IvshmemErrorCode, type IvshmemLibraryCode } from './errors.js';
export {
  connect,
  listDevices,
  openDevice,
  openFile,
  openSysfs,
  openVfio,
  FileDevice,
  ServerPeerDevice,
  SysfsDevice,
  VfioDevice,
  type Backend,
  type ConnectOptions,
  type Device,
  type DeviceEvents,
  type Interrupt,
  type InterruptOptions,
  type ListDevicesOptions,
  type OpenDeviceOptions,
  type OpenFileOptions,
  type OpenSysfsOptions,
  type OpenVfioOptions,
  type PciDeviceInfo,
  type RemotePeer,
  type SealedMemoryPolicy,
} from './device/index.js';
export { IvshmemServer, type QueueLimit, type ServerEvents, type ServerOptions, type ServerPeer } from './server/index.js';
export { maxMappingSize } from './mapping.js';
export {
  createChannel,
  channelDuplex,
  channelReadable,
  channelWritable,
  STREAM_DATA,
  type ChannelStreamOptions,
  ChannelReader,
  ChannelWriter,
  ChannelError,
  bytesCodec,
  jsonCodec,
  utf8Codec,
  formatRing,
  ringSize,
  ringCapacityFor,
  deviceWaitStrategy,
  pollingWaitStrategy,
  type Channel,
  type BlockingOptions,
  type BlockingWake,
  type OpenOptions,
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
export {
  attach,
  Bus,
  type AttachOptions,
  type BusEvents,
  type BusPeer,
  type Geometry,
  type IncomingChannel,
  type PeerDownReason,
  type RegionFormat,
  type RegionPlacement,
} from './bus/index.js';
