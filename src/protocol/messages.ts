// The ivshmem-server protocol's messages (server → client only; clients send nothing). Every
// message is one little-endian int64, some with one fd attached. In order, a new client gets:
//   version        PROTOCOL_VERSION, no fd
//   its own ID     the ID, no fd
//   shared memory  SHM_MESSAGE (-1) with the memory's fd
//   peer vectors   another peer's ID with one eventfd, once per vector of each peer
//   own vectors    its own ID with one eventfd, once per vector (these end the setup)
// and later: a peer ID with an eventfd (a newcomer's vector), a peer ID without (it left).
import { PROTOCOL_VERSION } from './limits.js';
import type { MessageSocket } from './message-socket.js';
import type { FdRef } from './fd-ref.js';

/** The value the shared-memory fd comes with. */
export const SHM_MESSAGE = -1;

/** What a server tells a newcomer before the vectors: the version, its ID, the shared memory. */
export function sendGreeting(socket: MessageSocket, id: number, shm: FdRef): void {
  socket.send(PROTOCOL_VERSION);
  socket.send(id);
  socket.send(SHM_MESSAGE, shm);
}

/** One vector of peer `id` (a newcomer's, an existing peer's, or the client's own). */
export function sendVector(socket: MessageSocket, id: number, eventfd: FdRef): void {
  socket.send(id, eventfd);
}

/** Peer `id` left. */
export function sendGone(socket: MessageSocket, id: number): void {
  socket.send(id);
}
