/**
 * A QEMU-compatible ivshmem-server: {@link IvshmemServer}.
 *
 * @module
 */
export { IvshmemServer, roundShmSize, type ServerEvents, type ServerOptions, type ServerPeer } from './server.js';
export type { QueueLimit } from '../protocol/index.js';
