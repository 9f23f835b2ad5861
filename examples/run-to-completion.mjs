// Run-to-completion: a worker thread owns its data path and never returns to its event loop
// while it serves. It blocks in receiveSync() (spin on the ring, then sleep in the kernel on
// the doorbell's eventfd) and answers with sendSync(). The main thread is the client, blocking
// too. Both are peers of an ivshmem server, as two VMs would be (in a guest, open the device
// with openDevice(..., { backend: 'vfio' }) instead of connect()).
//
//   node examples/run-to-completion.mjs [round trips = 10000] [spin µs = 50]
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { ChannelReader, ChannelWriter, connect, deviceWaitStrategy, formatRing, IvshmemServer, ringSize } from 'ivshmem';

const RING = ringSize(1 << 16);

if (isMainThread) {
  const count = Number(process.argv[2] ?? 10_000);
  const spin = Number(process.argv[3] ?? 50);
  const socket = join(tmpdir(), `ivshmem-rtc-example-${process.pid}.sock`);
  // The server runs in this thread, which also blocks in receiveSync below: it works here
  // because both peers connect before anything blocks, and a connected peer needs nothing more
  // from the server (the memory and eventfds were handed over; doorbells go eventfd to
  // eventfd). A peer that connects or leaves meanwhile waits until this thread is back in its
  // event loop. A real program runs the server elsewhere (`ivshmem server`, another process).
  const server = await IvshmemServer.listen({ socket, size: 2 * RING });
  const device = await connect(socket, { vectors: 1 });
  // One ring each way; exactly one side formats, before the other attaches.
  formatRing(device.memory, { offset: 0, size: RING });
  formatRing(device.memory, { offset: RING, size: RING });

  // Rendezvous: the worker connects after us, so it finds our ID in device.peers, and tells us
  // its own (between VMs the same is done through the shared memory: see docs/performance.md).
  const worker = new Worker(new URL(import.meta.url), { workerData: { socket, spin } });
  // Listened to from the start: a worker that ends right after its last message may emit
  // 'exit' in the same turn as that message.
  const exited = once(worker, 'exit');
  const [{ id: serverId }] = await once(worker, 'message');

  const wait = deviceWaitStrategy(device, { peer: serverId });
  const requests = new ChannelWriter(device.memory, { offset: 0, size: RING, wait });
  const replies = new ChannelReader(device.memory, { offset: RING, size: RING, wait });
  const request = new Uint8Array(64);
  const view = new DataView(request.buffer);
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    view.setUint32(0, i, true);
    const start = performance.now();
    requests.sendSync(request);
    const reply = replies.receiveSync({ timeout: 10_000, spin });
    samples[i] = performance.now() - start;
    if (new DataView(reply.buffer, reply.byteOffset).getUint32(0, true) !== i + 1) throw new Error(`reply ${i} is wrong`);
  }
  requests.close(); // the worker sees EOF and ends
  const [{ served }] = await once(worker, 'message');
  samples.sort();
  const us = (p) => (samples[Math.min(count - 1, Math.floor((count * p) / 100))] * 1000).toFixed(1);
  console.log(`${count} round trips (${served} served by the worker), spin ${spin} µs: p50 ${us(50)} µs, p99 ${us(99)} µs`);
  await exited;
  device.close();
  await server.close();
} else {
  // The server: its own device (its own eventfds) in this thread.
  const { socket, spin } = workerData;
  const device = await connect(socket, { vectors: 1 });
  const client = device.peers[0].id;
  const wait = deviceWaitStrategy(device, { peer: client });
  const requests = new ChannelReader(device.memory, { offset: 0, size: RING, wait });
  const replies = new ChannelWriter(device.memory, { offset: RING, size: RING, wait });
  parentPort.postMessage({ id: device.id });
  let served = 0;
  // readySync() is false at EOF; drain() hands every waiting request over without copying.
  while (requests.readySync({ spin })) {
    requests.drain((bytes, offset, length) => {
      // The request's bytes are shared memory, valid during this call: the reply is a copy.
      const reply = Uint8Array.prototype.slice.call(bytes, offset, offset + length);
      const v = new DataView(reply.buffer);
      v.setUint32(0, v.getUint32(0, true) + 1, true);
      replies.sendSync(reply);
      served++;
    });
  }
  replies.close();
  device.close();
  parentPort.postMessage({ served });
}
