// `npm run bench`: shared-memory channels against a Unix socket, TCP loopback and a worker
// MessagePort, the copy ceiling, and doorbell wake-ups against a bare eventfd ping-pong, all
// in one run. Two processes everywhere except the copy ceiling (one) and the MessagePort (two
// threads). Prints tables and the ratios BENCHMARKS.md tracks. Not a test: nothing is asserted.
import { execFileSync, fork } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { ChannelReader, ChannelWriter, deviceWaitStrategy, formatRing, ringSize } from '../dist/channel/index.js';
import { openFile } from '../dist/device/file.js';
import { native } from '../dist/native.js';

const SIZES = (process.env.BENCH_SIZES ?? '64,1024,4096,65536').split(',').filter(Boolean).map(Number);
const DURATION = Number(process.env.BENCH_MS ?? 500); // per throughput run
const ROUND_TRIPS = Number(process.env.BENCH_ROUND_TRIPS ?? 2500);
// Round trips left out before sampling: long enough for the JIT to optimize the channel code
// (with 50, a good part of the samples ran in baseline code, which weighed on the channel's
// longer paths more than on the bare baselines).
const WARMUP = Number(process.env.BENCH_WARMUP ?? 500);
// BENCH_ONLY=shm,unix,tcp,port,copy,copy2p,doorbell,rtc runs a subset (for comparing variants quickly).
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',')) : null;
const wanted = (name) => !ONLY || ONLY.has(name);
const CAPACITY = 1 << 20; // ring data area for throughput runs
const PEER = new URL('./peer.mjs', import.meta.url).pathname;
const tag = `${process.pid}`;
const started = performance.now();
const cleanups = [];
let servers = 0;

const spawnPeer = (args, stdio = ['ignore', 'inherit', 'inherit', 'ipc']) => fork(PEER, args, { stdio });
const next = async (emitter) => (await once(emitter, 'message'))[0];
const shmFile = (name, size) => {
  const path = `/dev/shm/ivshmem-bench-${name}-${tag}`;
  const device = openFile(path, { size, create: true });
  cleanups.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return { path, device };
};
// A run that hit its time limit early (a round trip of milliseconds) keeps its second half.
const afterWarmup = (samples) => samples.slice(Math.min(WARMUP, samples.length >> 1));
const median = (list) => [...list].sort((a, b) => a.p50 - b.p50)[list.length >> 1];
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
const summary = (samples) => {
  const sorted = Float64Array.from(samples).sort();
  return { p50: percentile(sorted, 50) * 1000, p99: percentile(sorted, 99) * 1000, n: sorted.length };
};
const payload = (size) => Buffer.alloc(size, 0x5a);

async function roundTrips(once) {
  const samples = [];
  const deadline = performance.now() + 2500;
  for (let i = 0; i < ROUND_TRIPS && performance.now() < deadline; i++) {
    const t = performance.now();
    await once();
    samples.push(performance.now() - t);
  }
  return summary(afterWarmup(samples));
}

// ---- shared memory ring over a /dev/shm file, polling with a 50 µs spin ----
async function shmThroughput(size) {
  const { path, device } = shmFile(`tp${size}`, ringSize(CAPACITY));
  formatRing(device.memory);
  const sink = spawnPeer(['shm-sink', path, '0']);
  await next(sink);
  const writer = new ChannelWriter(device.memory, { spin: 50 });
  // Batches of 64: one tail store (and at most one doorbell) per batch, as sockets get one
  // write per message but the kernel coalesces them.
  const batch = new Array(64).fill(payload(size));
  const end = performance.now() + DURATION;
  while (performance.now() < end) await writer.sendBatch(batch);
  writer.close();
  return next(sink);
}

async function shmRoundTrip(size, doorbell) {
  const capacity = 1 << 18;
  let memory;
  let wait;
  let echo;
  let spin = 50;
  if (doorbell) {
    const { IvshmemServer } = await import('../dist/server/server.js');
    const { connect } = await import('../dist/device/server-peer.js');
    const socket = join(tmpdir(), `ivshmem-bench-${tag}-${++servers}.sock`);
    const server = await IvshmemServer.listen({ socket, size: 2 * ringSize(capacity), vectors: 1 });
    const device = await connect(socket);
    cleanups.push(async () => {
      device.close();
      await server.close();
    });
    memory = device.memory;
    formatRing(memory, { offset: 0, size: ringSize(capacity) });
    formatRing(memory, { offset: ringSize(capacity), size: ringSize(capacity) });
    spin = doorbell.spin;
    echo = spawnPeer(['db-echo', socket, '0', String(ringSize(capacity)), String(spin)]);
    await next(echo);
    const peer = device.peers[0].id;
    wait = deviceWaitStrategy(device, { peer, vector: 0, recheck: 0 });
  } else {
    const file = shmFile(`rt${size}`, 2 * ringSize(capacity));
    memory = file.device.memory;
    formatRing(memory, { offset: 0, size: ringSize(capacity) });
    formatRing(memory, { offset: ringSize(capacity), size: ringSize(capacity) });
    echo = spawnPeer(['shm-echo', file.path, '0', String(ringSize(capacity))]);
    await next(echo);
  }
  const writer = new ChannelWriter(memory, { offset: 0, size: ringSize(capacity), wait, spin });
  const reader = new ChannelReader(memory, { offset: ringSize(capacity), size: ringSize(capacity), wait, spin });
  const msg = payload(size);
  const result = await roundTrips(async () => {
    await writer.send(msg);
    await reader.receive();
  });
  writer.close();
  await once(echo, 'exit');
  return result;
}

// ---- Unix socket and TCP loopback: length-prefixed frames, one write per message ----
async function socketServer(kind) {
  const server = net.createServer();
  const address = kind === 'unix' ? join(tmpdir(), `ivshmem-bench-${kind}-${tag}.sock`) : 0;
  if (kind === 'unix') rmSync(address, { force: true });
  server.listen(kind === 'unix' ? address : { port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  cleanups.push(() => server.close());
  return { server, address: kind === 'unix' ? address : String(server.address().port) };
}

const frame = (size) => {
  const buf = Buffer.alloc(4 + size, 0x5a);
  buf.writeUInt32LE(size, 0);
  return buf;
};

async function socketThroughput(kind, size) {
  const { server, address } = await socketServer(kind);
  const sink = spawnPeer(['sock-sink', address]);
  const [socket] = await once(server, 'connection');
  socket.setNoDelay?.(true);
  const msg = frame(size);
  const end = performance.now() + DURATION;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) if (!socket.write(msg)) await once(socket, 'drain');
  }
  socket.end();
  const result = await next(sink);
  server.close();
  return result;
}

async function socketRoundTrip(kind, size) {
  const { server, address } = await socketServer(kind);
  const echo = spawnPeer(['sock-echo', address]);
  const [socket] = await once(server, 'connection');
  socket.setNoDelay?.(true);
  const msg = frame(size);
  let got = 0;
  let done = null;
  socket.on('data', (chunk) => {
    got += chunk.length;
    if (got >= msg.length) {
      got -= msg.length;
      done();
    }
  });
  const result = await roundTrips(() => new Promise((resolve) => ((done = resolve), socket.write(msg))));
  socket.end();
  await once(echo, 'exit');
  server.close();
  return result;
}

// ---- worker thread MessagePort: structured clone of a Uint8Array, credit-based flow ----
async function portThroughput(size) {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(PEER, { workerData: { role: 'port-sink', port: port2 }, transferList: [port2] });
  let acked = 0;
  let wake = null;
  port1.on('message', (n) => {
    acked = n;
    wake?.();
  });
  const msg = payload(size);
  const window = Math.max(256, Math.min(8192, (8 << 20) / size)); // > 64, the credit interval
  let sent = 0;
  const end = performance.now() + DURATION;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++, sent++) port1.postMessage(msg);
    while (sent - acked > window) await new Promise((r) => (wake = r));
  }
  port1.postMessage(null);
  const result = await next(worker);
  port1.close();
  await worker.terminate();
  return result;
}

async function portRoundTrip(size) {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(PEER, { workerData: { role: 'port-echo', port: port2 }, transferList: [port2] });
  let done = null;
  port1.on('message', () => done());
  const msg = payload(size);
  const result = await roundTrips(() => new Promise((resolve) => ((done = resolve), port1.postMessage(msg))));
  port1.close();
  await worker.terminate();
  return result;
}

// ---- the copy ceiling: Buffer copies into the mapped region, cycling like a ring ----
function copyCeiling(size) {
  const { device } = shmFile(`copy${size}`, ringSize(CAPACITY));
  const target = Buffer.from(device.memory);
  const msg = payload(size);
  const stride = 8 + Math.ceil(size / 8) * 8;
  let at = 0;
  let bytes = 0;
  const start = performance.now();
  const end = start + DURATION / 2;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) {
      if (at + stride > CAPACITY) at = 0;
      target.set(msg, at + 8);
      at += stride;
      bytes += size;
    }
  }
  const ms = performance.now() - start;
  return { mbs: bytes / ms / 1000 };
}

// ---- the two-process copy ceiling: the ring's memory traffic between two processes without
// the channel (no API, codec or validation); see 'raw-sink' in peer.mjs for the layout ----
async function copyCeiling2p(size) {
  const { path, device } = shmFile(`raw${size}`, ringSize(CAPACITY));
  const u32 = new Uint32Array(device.memory);
  const data = Buffer.from(device.memory, 640, CAPACITY);
  const sink = spawnPeer(['raw-sink', path, String(CAPACITY)]);
  await next(sink);
  const msg = payload(size);
  const stride = 8 + Math.ceil(size / 8) * 8;
  const mask = CAPACITY - 1;
  const publishEvery = CAPACITY >>> 2;
  let tail = 0;
  let published = 0;
  let head = 0;
  const end = performance.now() + DURATION;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) {
      const at = tail & mask;
      const pad = at + stride > CAPACITY ? CAPACITY - at : 0;
      while (((tail - head) >>> 0) + pad + stride > CAPACITY) head = Atomics.load(u32, 96);
      if (pad) {
        u32[160 + (at >>> 2)] = 0xffffffff;
        tail = (tail + pad) >>> 0;
      }
      const to = tail & mask;
      data.set(msg, to + 8);
      u32[160 + (to >>> 2)] = size;
      tail = (tail + stride) >>> 0;
      if (((tail - published) >>> 0) >= publishEvery) Atomics.store(u32, 32, (published = tail));
    }
  }
  Atomics.store(u32, 32, tail);
  Atomics.store(u32, 34, 1);
  return next(sink);
}

// ---- bare eventfd ping-pong: the floor of any doorbell wake-up ----
async function eventfdPingPong() {
  const mine = native.eventfdCreate();
  const theirs = native.eventfdCreate();
  const echo = spawnPeer(['efd-echo'], ['ignore', 'inherit', 'inherit', theirs, mine, 'ipc']);
  await next(echo);
  let done = null;
  const watcher = new native.Watcher(mine, () => {
    if (native.eventfdDrain(mine) > 0) done();
  });
  watcher.start(native.READABLE);
  const result = await roundTrips(() => new Promise((resolve) => ((done = resolve), native.eventfdSignal(theirs))));
  watcher.close();
  echo.send('stop');
  await once(echo, 'exit');
  native.close(mine);
  native.close(theirs);
  return result;
}

// ---- run-to-completion and its baselines: every side blocks, nobody goes through the event loop ----
function roundTripsSync(once) {
  const samples = [];
  const deadline = performance.now() + 2500;
  for (let i = 0; i < ROUND_TRIPS && performance.now() < deadline; i++) {
    const t = performance.now();
    once(i);
    samples.push(performance.now() - t);
  }
  return summary(afterWarmup(samples));
}

async function doorbellServer(size) {
  const { IvshmemServer } = await import('../dist/server/server.js');
  const { connect } = await import('../dist/device/server-peer.js');
  const socket = join(tmpdir(), `ivshmem-bench-${tag}-${++servers}.sock`);
  const server = await IvshmemServer.listen({ socket, size, vectors: 1 });
  const device = await connect(socket, { vectors: 1 });
  const close = async () => {
    device.close();
    await server.close();
  };
  return { socket, device, close };
}

// The other peer's ID once the server told us about it (its IPC 'ready' may come first).
async function peerOf(device) {
  while (device.peers.length === 0) await once(device, 'peer-connected');
  return device.peers[0].id;
}

// Channel round trips on the blocking path: receiveSync/sendSync on both sides, over our
// server's eventfds. spin 0: every message finds the other end asleep in ppoll.
// pinned: this process on CPU 0, the echo on CPU 1 (taskset), for the spin path's floor: two
// ends the scheduler puts on one CPU can only hand it to each other.
async function rtcRoundTrip(spin, pinned = false) {
  const capacity = 1 << 16;
  const { socket, device, close } = await doorbellServer(2 * ringSize(capacity));
  try {
    formatRing(device.memory, { offset: 0, size: ringSize(capacity) });
    formatRing(device.memory, { offset: ringSize(capacity), size: ringSize(capacity) });
    const echo = spawnPeer(['rtc-echo', socket, '0', String(ringSize(capacity)), String(spin)]);
    await next(echo);
    if (pinned) {
      pin(echo.pid, 1);
      pin(process.pid, 0);
    }
    const wait = deviceWaitStrategy(device, { peer: await peerOf(device), vector: 0 });
    const writer = new ChannelWriter(device.memory, { offset: 0, size: ringSize(capacity), wait, spin });
    const reader = new ChannelReader(device.memory, { offset: ringSize(capacity), size: ringSize(capacity), wait, spin });
    const msg = payload(64);
    const options = { spin, timeout: 10_000 };
    const result = roundTripsSync(() => {
      writer.sendSync(msg);
      reader.receiveSync(options);
    });
    writer.close();
    await once(echo, 'exit');
    return result;
  } finally {
    if (pinned) pin(process.pid, `0-${cpus().length - 1}`);
    await close();
  }
}

const pin = (pid, cpu) => execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
const canPin = (() => {
  try {
    return cpus().length >= 2 && (execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' }), true);
  } catch {
    return false;
  }
})();

// Bare Node doorbell: ring() and an 'interrupt' listener on both sides, no channel.
async function bellPingPong() {
  const { socket, device, close } = await doorbellServer(4096);
  try {
    const echo = spawnPeer(['bell-echo', socket]);
    await next(echo);
    const peer = await peerOf(device);
    let done = null;
    device.on('interrupt', () => done());
    const result = await roundTrips(() => new Promise((resolve) => ((done = resolve), device.ring(peer, 0))));
    echo.send('stop');
    await once(echo, 'exit');
    return result;
  } finally {
    await close();
  }
}

// Bare eventfd ping-pong with both sides blocking in ppoll: the floor of a sleeping wake-up.
async function eventfdBlockingPingPong() {
  const mine = native.eventfdCreate();
  const theirs = native.eventfdCreate();
  const echo = spawnPeer(['efd-block-echo'], ['ignore', 'inherit', 'inherit', theirs, mine, 'ipc']);
  await next(echo);
  const word = new ArrayBuffer(4);
  const result = roundTripsSync(() => {
    native.eventfdSignal(theirs);
    native.waitWord(word, 0, 0, mine, 0, -1);
    native.eventfdDrain(mine);
  });
  native.eventfdSignal(theirs, 1000);
  await once(echo, 'exit');
  native.close(mine);
  native.close(theirs);
  return result;
}

// Bare spin ping-pong over a /dev/shm word: the floor of a round trip that never sleeps.
async function spinPingPong() {
  const { path, device } = shmFile(`spin${++servers}`, 4096);
  const u32 = new Uint32Array(device.memory);
  const echo = spawnPeer(['spin-echo', path]);
  await next(echo);
  const result = roundTripsSync((i) => {
    Atomics.store(u32, 0, i + 1);
    while (Atomics.load(u32, 16) !== i + 1);
  });
  Atomics.store(u32, 0, 0xffffffff);
  await once(echo, 'exit');
  return result;
}

// ---- run everything ----
const fmt = (n, digits = 0) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(digits));
const rate = (r) => ({ msgs: (r.count / r.ms) * 1000, mbs: r.bytes / r.ms / 1000 });
const results = {};

console.log(`ivshmem bench: node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ${DURATION} ms per throughput run`);
try {
  for (const size of SIZES) {
    const row = (results[size] = {});
    if (wanted('shm')) row.shm = { ...rate(await shmThroughput(size)), ...(await shmRoundTrip(size)) };
    if (wanted('unix')) row.unix = { ...rate(await socketThroughput('unix', size)), ...(await socketRoundTrip('unix', size)) };
    if (wanted('tcp')) row.tcp = { ...rate(await socketThroughput('tcp', size)), ...(await socketRoundTrip('tcp', size)) };
    if (wanted('port')) row.port = { ...rate(await portThroughput(size)), ...(await portRoundTrip(size)) };
    if (wanted('copy')) row.copy = copyCeiling(size);
    if (wanted('copy2p')) row.copy2p = rate(await copyCeiling2p(size));
    if (Object.keys(row).length === 0) continue;
    console.log(`\n${size} B messages`);
    console.log('  transport        msg/s       MB/s    RTT p50 µs  RTT p99 µs');
    for (const [name, r] of Object.entries(row)) {
      if (name === 'copy' || name === 'copy2p') continue;
      console.log(`  ${name.padEnd(10)} ${fmt(r.msgs).padStart(10)} ${r.mbs.toFixed(0).padStart(10)} ${r.p50.toFixed(1).padStart(13)} ${r.p99.toFixed(1).padStart(11)}`);
    }
    if (row.copy) console.log(`  copy ceiling            ${row.copy.mbs.toFixed(0).padStart(10)}   (one process: Buffer#set into the mapped region)`);
    if (row.copy2p) console.log(`  2-process ceiling ${fmt(row.copy2p.msgs).padStart(10)} ${row.copy2p.mbs.toFixed(0).padStart(10)}   (the ring's memory traffic, no channel code)`);
    const ratios = [];
    if (row.shm && row.unix) ratios.push(`shm/unix msg/s ${(row.shm.msgs / row.unix.msgs).toFixed(1)}x`);
    if (row.shm && row.tcp) ratios.push(`shm/tcp ${(row.shm.msgs / row.tcp.msgs).toFixed(1)}x`);
    if (row.shm && row.port) ratios.push(`shm/port ${(row.shm.msgs / row.port.msgs).toFixed(1)}x`);
    if (row.shm && row.copy) ratios.push(`shm/copy ceiling ${((100 * row.shm.mbs) / row.copy.mbs).toFixed(0)}%`);
    if (row.shm && row.copy2p) ratios.push(`shm/2-process ceiling ${((100 * row.shm.mbs) / row.copy2p.mbs).toFixed(0)}%`);
    if (row.shm && row.unix) ratios.push(`RTT unix/shm ${(row.unix.p50 / row.shm.p50).toFixed(1)}x`);
    if (ratios.length > 0) console.log(`  ratios: ${ratios.join(', ')}`);
  }

  let bell = null;
  let efd = null;
  if (wanted('doorbell')) {
    console.log('\nDoorbell wake-ups (ivshmem server, eventfds; 64 B; every message sleeps and is rung awake)');
    // Wake-up latency in a VM swings with what the host does (a sleeping vCPU wakes in 10 µs
    // or in 300): alternate the two, five times, and report the median p50 of each and the
    // median of the five pairwise ratios.
    const PAIRS = Number(process.env.BENCH_DOORBELL_PAIRS ?? 5);
    const runs = { efd: [], bell: [], bare: [] };
    for (let i = 0; i < PAIRS; i++) {
      runs.efd.push(await eventfdPingPong());
      runs.bare.push(await bellPingPong());
      runs.bell.push(await shmRoundTrip(64, { spin: 0 }));
    }
    const ratios = runs.bell.map((r, i) => r.p50 / runs.efd[i].p50).sort((a, b) => a - b);
    const bareRatios = runs.bell.map((r, i) => r.p50 / runs.bare[i].p50).sort((a, b) => a - b);
    console.log(`  p50 per run: eventfd ${runs.efd.map((r) => r.p50.toFixed(0)).join(' / ')} µs, bare doorbell ${runs.bare.map((r) => r.p50.toFixed(0)).join(' / ')} µs, ring ${runs.bell.map((r) => r.p50.toFixed(0)).join(' / ')} µs`);
    console.log(`  ring/eventfd per pair: ${ratios.map((r) => r.toFixed(2)).join(' ')} (median ${ratios[ratios.length >> 1].toFixed(2)}x)`);
    console.log(`  ring/bare doorbell per pair: ${bareRatios.map((r) => r.toFixed(2)).join(' ')} (median ${bareRatios[bareRatios.length >> 1].toFixed(2)}x)`);
    efd = median(runs.efd);
    bell = median(runs.bell);
    const bare = median(runs.bare);
    results.doorbellPairRatio = ratios[ratios.length >> 1];
    results.asyncBarePairRatio = bareRatios[bareRatios.length >> 1];
    console.log(`  bare Node doorbell          p50 ${bare.p50.toFixed(1)} µs  p99 ${bare.p99.toFixed(1)} µs`);
    results.bareDoorbell = bare;
    const bellSpin = await shmRoundTrip(64, { spin: 50 });
    console.log(`  bare eventfd ping-pong      p50 ${efd.p50.toFixed(1)} µs  p99 ${efd.p99.toFixed(1)} µs`);
    console.log(`  ring + doorbell, no spin    p50 ${bell.p50.toFixed(1)} µs  p99 ${bell.p99.toFixed(1)} µs`);
    console.log(`  ring + doorbell, 50 µs spin p50 ${bellSpin.p50.toFixed(1)} µs  p99 ${bellSpin.p99.toFixed(1)} µs`);
    results.doorbell = { eventfd: efd, ring: bell, ringSpin: bellSpin };
  }

  let rtc = null;
  if (wanted('rtc')) {
    console.log('\nRun-to-completion round trips (64 B; both sides block in receiveSync/sendSync, over our server)');
    // Alternating, as above: sleep-path variants next to the blocking eventfd floor, spin-path
    // variants next to the bare spin floor.
    const PAIRS = Number(process.env.BENCH_DOORBELL_PAIRS ?? 5);
    const runs = { efd: [], sleep: [], spinFloor: [], spin: [], pinned: [] };
    for (let i = 0; i < PAIRS; i++) {
      runs.efd.push(await eventfdBlockingPingPong());
      runs.sleep.push(await rtcRoundTrip(0));
      runs.spinFloor.push(await spinPingPong());
      runs.spin.push(await rtcRoundTrip(50));
      if (canPin) runs.pinned.push(await rtcRoundTrip(50, true));
    }
    const per = (a, b) => runs[a].map((r, i) => r.p50 / runs[b][i].p50).sort((x, y) => x - y);
    const sleepRatios = per('sleep', 'efd');
    const spinRatios = per('spin', 'spinFloor');
    const rows = [['efd', 'bare eventfd, blocking  '], ['sleep', 'channel, spin 0 (sleeps)'], ['spinFloor', 'bare spin over shm      '], ['spin', 'channel, spin 50 µs     ']];
    if (canPin) rows.push(['pinned', 'same, pinned to 2 CPUs  ']);
    for (const [name, label] of rows) {
      const m = median(runs[name]);
      console.log(`  ${label} p50 ${m.p50.toFixed(1).padStart(7)} µs  p99 ${m.p99.toFixed(1).padStart(8)} µs   (p50 per run ${runs[name].map((r) => r.p50.toFixed(1)).join(' / ')})`);
    }
    console.log(`  sleep/eventfd per pair: ${sleepRatios.map((r) => r.toFixed(2)).join(' ')} (median ${sleepRatios[sleepRatios.length >> 1].toFixed(2)}x)`);
    console.log(`  spin/bare spin per pair: ${spinRatios.map((r) => r.toFixed(1)).join(' ')} (median ${spinRatios[spinRatios.length >> 1].toFixed(1)}x)`);
    rtc = { efd: median(runs.efd), sleep: median(runs.sleep), spinFloor: median(runs.spinFloor), spin: median(runs.spin), pinned: canPin ? median(runs.pinned) : null, sleepRatio: sleepRatios[sleepRatios.length >> 1] };
    results.rtc = rtc;
  }

  const r64 = results[64];
  const r4k = results[4096];
  console.log('\nTargets');
  if (r64?.shm && r64.unix) console.log(`  64 B msg/s vs Unix socket:        ${(r64.shm.msgs / r64.unix.msgs).toFixed(1)}x (target >= 20x)`);
  if (r4k?.shm && r4k.copy) console.log(`  4 KiB MB/s vs copy ceiling:        ${((100 * r4k.shm.mbs) / r4k.copy.mbs).toFixed(0)}% (target >= 80%)`);
  if (bell) console.log(`  doorbell RTT vs eventfd ping-pong: ${(bell.p50 / efd.p50).toFixed(2)}x of the median p50s, ${results.doorbellPairRatio.toFixed(2)}x median per pair (target <= 1.2x)`);
  if (results.bareDoorbell) console.log(`  async channel RTT vs bare doorbell: ${(bell.p50 / results.bareDoorbell.p50).toFixed(2)}x of the median p50s, ${results.asyncBarePairRatio.toFixed(2)}x median per pair (target <= 1.2x)`);
  if (rtc) {
    console.log(`  run-to-completion RTT with spin:    p50 ${rtc.spin.p50.toFixed(1)} µs${rtc.pinned ? `, pinned to two CPUs ${rtc.pinned.p50.toFixed(1)} µs` : ''} (target <= 3 µs)`);
    console.log(`  doorbell RTT (blocking) vs eventfd: ${(rtc.sleep.p50 / rtc.efd.p50).toFixed(2)}x of the median p50s, ${rtc.sleepRatio.toFixed(2)}x median per pair (target <= 1.2x)`);
  }
  console.log(`\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (process.env.BENCH_JSON) console.log(JSON.stringify(results));
} finally {
  for (const f of cleanups.reverse()) await f();
}
