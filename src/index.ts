/**
 * ivshmem for Node.js: QEMU inter-VM shared memory as a message bus.
 *
 * @packageDocumentation
 */
export { IvshmemError, type IvshmemErrorCode } from './errors.js';
export type { Backend, Device, DeviceEvents, Interrupt, InterruptOptions } from './device/types.js';
export { openFile, FileDevice, type OpenFileOptions } from './device/file.js';
export { connect, ServerPeerDevice, type ConnectOptions, type RemotePeer } from './device/server-peer.js';
export { IvshmemServer, roundShmSize, type ServerOptions, type ServerPeer, type ServerEvents } from './server/server.js';
