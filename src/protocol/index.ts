// The ivshmem-server wire protocol, shared by the server (src/server/) and the host-side client
// device (src/device/server-peer.ts): the transport (a message socket carrying fds, and the
// reference-counted fds it sends), the message kinds, the limits, and the client's handshake.
export { FdRef } from './fd-ref.js';
export { ClientHandshake, type HandshakeResult, type HandshakeStage, type HandshakeStep } from './handshake.js';
export { checkSealedMemoryPolicy, checkServerMemory, type SealedMemoryPolicy } from './memory-seals.js';
export { isPeerId, isVectorCount, MAX_VECTORS, PEER_IDS, PROTOCOL_VERSION } from './limits.js';
export { sendGone, sendGreeting, sendVector, SHM_MESSAGE } from './messages.js';
export { MessageSocket, type MessageHandlers, type QueueLimit } from './message-socket.js';
