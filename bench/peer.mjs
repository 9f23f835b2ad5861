// The far end of every bench workload: a child process (roles from argv) or a worker thread
// (roles from workerData). Sinks count what arrives and report once the sender ends; echoes
// send every message straight back.
import net from 'node:net';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ChannelReader, ChannelWriter, deviceWaitStrategy } from '../dist/channel/index.js';
import { openFile } from '../dist/device/file.js';
import { native } from '../dist/native.js';

const [role, ...args] = isMainThread ? process.argv.slice(2) : [workerData.role];
const report = (value) => (isMainThread ? process.send(value) : parentPort.postMessage(value));

// Splits a byte stream into [u32 length][payload] frames.
function framer(onFrame) {
  let pending = null;
  return (chunk) => {
    let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= 4) {
      const length = buf.readUInt32LE(at);
      if (buf.length - at - 4 < length) break;
      onFrame(buf, at, length + 4);
      at += length + 4;
    }
    pending = at === buf.length ? null : buf.subarray(at);
  };
}

if (role === 'shm-sink') {
  const device = openFile(args[0]);
  const reader = new ChannelReader(device.memory, { offset: Number(args[1]), spin: 50 });
  let count = 0;
  let bytes = 0;
  let check = 0;
  let first = 0;
  const onRecord = (data, offset, length) => {
    count++;
    bytes += length;
    check ^= data[offset] ^ data[offset + length - 1];
  };
  report({ ready: true });
  if (await reader.ready()) first = performance.now();
  for (;;) {
    if (reader.drain(onRecord) === 0 && !(await reader.ready())) break;
  }
  report({ count, bytes, ms: performance.now() - first, check });
} else if (role === 'raw-sink') {
  // The two-process ceiling's reader: the ring's memory traffic (a length word per record, the
  // payload's first and last byte, the head stored every quarter ring) with no API, no codec
  // and no validation. Words: 32 tail, 34 end flag, 96 head; records from byte 640; length
  // 0xffffffff pads to the end of the data area.
  const memory = openFile(args[0]).memory;
  const capacity = Number(args[1]);
  const u32 = new Uint32Array(memory);
  const data = new Uint8Array(memory, 640, capacity);
  const mask = capacity - 1;
  const release = capacity >>> 2;
  let head = 0;
  let released = 0;
  let count = 0;
  let bytes = 0;
  let check = 0;
  let first = 0;
  report({ ready: true });
  for (;;) {
    const tail = Atomics.load(u32, 32);
    if (tail === head) {
      if (Atomics.load(u32, 34) !== 0 && Atomics.load(u32, 32) === head) break;
      continue;
    }
    if (first === 0) first = performance.now();
    while (head !== tail) {
      const at = head & mask;
      const length = u32[160 + (at >>> 2)];
      if (length === 0xffffffff) {
        head = (head + capacity - at) >>> 0;
        continue;
      }
      count++;
      bytes += length;
      check ^= data[at + 8] ^ data[at + 7 + length];
      head = (head + 8 + ((length + 7) & ~7)) >>> 0;
      if (((head - released) >>> 0) >= release) Atomics.store(u32, 96, (released = head));
    }
  }
  report({ count, bytes, ms: performance.now() - first, check });
} else if (role === 'shm-echo' || role === 'db-echo') {
  let memory;
  let wait;
  let spin = 50;
  if (role === 'db-echo') {
    const { connect } = await import('../dist/device/server-peer.js');
    const device = await connect(args[0]);
    const peer = device.peers[0].id;
    wait = deviceWaitStrategy(device, { peer, vector: 0, recheck: 0 });
    memory = device.memory;
    spin = Number(args[3]);
  } else {
    memory = openFile(args[0]).memory;
  }
  const reader = new ChannelReader(memory, { offset: Number(args[1]), wait, spin });
  const writer = new ChannelWriter(memory, { offset: Number(args[2]), wait, spin });
  report({ ready: true });
  try {
    for await (const msg of reader) await writer.send(msg);
  } finally {
    writer.close();
  }
  process.exit(0);
} else if (role === 'sock-sink' || role === 'sock-echo') {
  const socket = net.connect(args[0].startsWith('/') ? { path: args[0] } : { port: Number(args[0]), host: '127.0.0.1' });
  socket.setNoDelay?.(true);
  let count = 0;
  let bytes = 0;
  let first = 0;
  const echo = role === 'sock-echo';
  socket.on(
    'data',
    framer((buf, at, length) => {
      if (echo) {
        socket.write(buf.subarray(at, at + length));
        return;
      }
      if (first === 0) first = performance.now();
      count++;
      bytes += length - 4;
    }),
  );
  socket.on('end', () => {
    if (!echo) report({ count, bytes, ms: performance.now() - first });
    socket.end();
  });
} else if (role === 'rtc-echo') {
  // Run-to-completion echo: blocks in receiveSync/sendSync (spin args[3] µs), no event loop.
  const { connect } = await import('../dist/device/server-peer.js');
  const device = await connect(args[0], { vectors: 1 });
  const wait = deviceWaitStrategy(device, { peer: device.peers[0].id, vector: 0 });
  const spin = Number(args[3]);
  const reader = new ChannelReader(device.memory, { offset: Number(args[1]), wait, spin });
  const writer = new ChannelWriter(device.memory, { offset: Number(args[2]), wait, spin });
  await new Promise((resolve) => process.send({ ready: true }, resolve));
  while (reader.readySync({ spin })) {
    writer.sendSync(reader.receiveSync());
  }
  writer.close();
  process.exit(0);
} else if (role === 'bell-echo') {
  // Bare Node doorbell: an 'interrupt' listener that rings the other peer back, no channel.
  const { connect } = await import('../dist/device/server-peer.js');
  const device = await connect(args[0], { vectors: 1 });
  const peer = device.peers[0].id;
  device.on('interrupt', () => device.ring(peer, 0));
  process.on('message', () => {
    device.close();
    process.exit(0);
  });
  report({ ready: true });
} else if (role === 'efd-block-echo') {
  // Bare eventfd ping-pong, blocking: sleeps in ppoll on fd 3, answers on fd 4; a count of
  // 1000 or more means stop.
  const word = new ArrayBuffer(4);
  await new Promise((resolve) => process.send({ ready: true }, resolve));
  for (;;) {
    native.waitWord(word, 0, 0, 3, 0, -1);
    const n = native.eventfdDrain(3);
    if (n >= 1000) break;
    if (n > 0) native.eventfdSignal(4);
  }
  process.exit(0);
} else if (role === 'spin-echo') {
  // Bare spin ping-pong over shared memory: u32 word 0 is the ping, word 16 the pong.
  const u32 = new Uint32Array(openFile(args[0]).memory);
  await new Promise((resolve) => process.send({ ready: true }, resolve));
  for (;;) {
    const v = Atomics.load(u32, 0);
    if (v === 0xffffffff) break;
    if (u32[16] !== v) Atomics.store(u32, 16, v);
  }
  process.exit(0);
} else if (role === 'efd-echo') {
  // Bare eventfd ping-pong: fd 3 is ours, fd 4 the parent's.
  const watcher = new native.Watcher(3, () => {
    const n = native.eventfdDrain(3);
    if (n > 0) native.eventfdSignal(4);
  });
  watcher.start(native.READABLE);
  process.on('message', () => {
    watcher.close();
    process.exit(0);
  });
  report({ ready: true });
} else if (role === 'port-sink' || role === 'port-echo') {
  const port = workerData.port;
  let count = 0;
  let bytes = 0;
  let first = 0;
  port.on('message', (msg) => {
    if (msg === null) {
      report({ count, bytes, ms: performance.now() - first });
      port.close();
      return;
    }
    if (role === 'port-echo') return port.postMessage(msg);
    if (first === 0) first = performance.now();
    count++;
    bytes += msg.byteLength;
    if (count % 64 === 0) port.postMessage(count); // credit for the sender
  });
}
