// Per-message CPU cost of each channel end in one process, without a second core: the writer
// fills a ring (sendBatch or trySend), then the reader empties it (drain or tryReceive), and
// each phase is timed on its own. For comparing hot-path changes; alternate variants and look
// at ns/msg. `node bench/micro.mjs [size=64] [ms=1000]`; MICRO_ONLY=write|drain|... to profile one phase.
import { rmSync } from 'node:fs';
import { ChannelReader, ChannelWriter, formatRing, ringSize, utf8Codec, jsonCodec } from '../dist/channel/index.js';
import { openFile } from '../dist/device/file.js';

const size = Number(process.argv[2] ?? 64);
const ms = Number(process.argv[3] ?? 1000);
const only = process.env.MICRO_ONLY;
const CAPACITY = 1 << 20;
// A mapped /dev/shm file, like the two-process bench (a SharedArrayBuffer copies differently).
const path = `/dev/shm/ivshmem-micro-${process.pid}`;
const device = openFile(path, { size: ringSize(CAPACITY), create: true });
rmSync(path);
const memory = device.memory;
const msg = Buffer.alloc(size, 0x5a);
const batch = new Array(64).fill(msg);
const text = 'x'.repeat(size);
const obj = { id: 1, name: 'y'.repeat(Math.max(0, size - 20)) };

let check = 0;
const onRecord = (data, offset, length) => {
  check ^= data[offset] ^ data[offset + length - 1];
};

function pair(codec) {
  formatRing(memory);
  const writer = new ChannelWriter(memory, { codec });
  const reader = new ChannelReader(memory, { codec });
  return { writer, reader };
}

// One phase = fill the ring with `write`, empty it with `read`; returns ns/msg of each.
async function measure(name, codec, write, read) {
  const { writer, reader } = pair(codec);
  let wNs = 0;
  let rNs = 0;
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    let t = performance.now();
    const sent = await write(writer);
    wNs += performance.now() - t;
    t = performance.now();
    const got = read(reader);
    rNs += performance.now() - t;
    if (got !== sent) throw new Error(`${name}: sent ${sent}, got ${got}`);
    n += sent;
  }
  return { name, write: (wNs * 1e6) / n, read: (rNs * 1e6) / n, n };
}

const perRing = Math.floor((CAPACITY * 0.9) / (8 + Math.ceil(size / 8) * 8));
const fillBatch = async (writer) => {
  let sent = 0;
  while (sent + 64 <= perRing) sent += await writer.sendBatch(batch);
  return sent;
};
const fillTry = (value) => (writer) => {
  let sent = 0;
  while (sent < perRing && writer.trySend(value)) sent++;
  return sent;
};
const drainAll = (reader) => reader.drain(onRecord);
const receiveAll = (reader) => {
  let got = 0;
  while (reader.tryReceive() !== undefined) got++;
  return got;
};

const cases = [
  ['batch+drain', undefined, fillBatch, drainAll],
  ['trySend+tryReceive bytes', undefined, fillTry(msg), receiveAll],
  ['trySend+tryReceive utf8', utf8Codec, fillTry(text), receiveAll],
  ['trySend+tryReceive json', jsonCodec(), fillTry(obj), receiveAll],
].filter(([name]) => !only || name.startsWith(only));

for (let round = 0; round < 3; round++) {
  for (const [name, codec, write, read] of cases) {
    const r = await measure(name, codec, write, read);
    if (round > 0) console.log(`${size} B ${r.name.padEnd(26)} write ${r.write.toFixed(1).padStart(7)} ns/msg  read ${r.read.toFixed(1).padStart(7)} ns/msg`);
  }
}
if (check === -1) console.log(check);
