#!/usr/bin/env node
// A host application: a QEMU-compatible ivshmem server, and this process on its bus as "host",
// answering "shout" channels (see shout.mjs). Runs until SIGINT or SIGTERM.
//
//   node examples/host.mjs /tmp/ivshmem.sock
//
// QEMU guests join with
//   -chardev socket,path=/tmp/ivshmem.sock,id=c0 -device ivshmem-doorbell,chardev=c0,vectors=2
// and run guest.mjs; host processes run `guest.mjs --socket /tmp/ivshmem.sock ...`.
import { IvshmemServer, attach, connect } from 'ivshmem';
import { answerShouts } from './shout.mjs';

const socket = process.argv[2] ?? '/tmp/ivshmem.sock';
const server = await IvshmemServer.listen({ socket, size: 1 << 20, vectors: 2 });
const device = await connect(socket);
const bus = await attach(device, { name: 'host' });
answerShouts(bus);
bus.on('peer-up', (peer) => console.log(`${peer.name} joined`));
bus.on('peer-down', (peer, reason) => console.log(`${peer.name} left (${reason})`));
console.log(`serving on ${socket}`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    bus.close();
    device.close();
    await server.close();
  });
}
