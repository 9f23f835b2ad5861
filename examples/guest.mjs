#!/usr/bin/env node
// A guest application: joins the bus as NAME, sends each WORD to "host" on a "shout" channel
// and prints the answers. In a QEMU guest (as root) it opens the ivshmem-doorbell device with
// VFIO; with --socket it is a host process on the server instead.
//
//   node guest.mjs NAME WORD...                       in a guest
//   node guest.mjs --socket /tmp/ivshmem.sock NAME WORD...   on the host
import { parseArgs } from 'node:util';
import { attach, connect, openDevice, utf8Codec } from 'ivshmem';

const { values, positionals } = parseArgs({ options: { socket: { type: 'string' } }, allowPositionals: true });
const [name, ...words] = positionals;
if (!name) {
  console.error('usage: guest.mjs [--socket SOCKET] NAME WORD...');
  process.exit(2);
}

const device = values.socket ? await connect(values.socket) : openDevice(undefined, { backend: 'vfio', bind: true });
const bus = await attach(device, { name });
try {
  const host = await bus.waitForPeer('host', { signal: AbortSignal.timeout(60_000) });
  const out = bus.open(host, 'shout', { codec: utf8Codec });
  const replies = bus.accept('reply', { from: host, codec: utf8Codec, signal: AbortSignal.timeout(60_000) });
  for (const word of words) await out.send(word);
  out.close();
  for await (const answer of await replies) console.log(answer);
} finally {
  bus.close();
  device.close();
}
