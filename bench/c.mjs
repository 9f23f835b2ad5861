// `npm run bench:c`: the C library's ends against the Node ones over /dev/shm rings, two
// processes each: throughput C→C, C→Node, Node→C and round trips, next to Node↔Node and the
// two-process ceiling as bench/run.mjs measures them (run here with BENCH_ONLY=shm,copy2p).
// All ends poll with a 50 µs spin, as in bench/run.mjs. The machine this was written on is
// shared and swings by 10x between runs: every row is measured BENCH_REPEAT times (default 3),
// the baseline alternating with the C rows, and the medians are printed. Not a test: nothing
// is asserted.
import { execFileSync, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { createInterface } from 'node:readline';
import { ChannelReader, ChannelWriter, formatRing, ringSize } from '../dist/channel/index.js';
import { openFile } from '../dist/device/file.js';

const SIZES = (process.env.BENCH_SIZES ?? '64,1024,4096,65536').split(',').filter(Boolean).map(Number);
const DURATION = Number(process.env.BENCH_MS ?? 500);
const ROUND_TRIPS = Number(process.env.BENCH_ROUND_TRIPS ?? 2000);
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 3));
const CAPACITY = 1 << 20;
const BENCH = new URL('../c/build/ivs-bench', import.meta.url).pathname;
const PEER = new URL('./peer.mjs', import.meta.url).pathname;
const RUN = new URL('./run.mjs', import.meta.url).pathname;
const cleanups = [];

const shmFile = (name, size) => {
  const path = `/dev/shm/ivshmem-bench-c-${name}-${process.pid}`;
  const device = openFile(path, { size, create: true });
  cleanups.push(() => {
    device.close();
    rmSync(path, { force: true });
  });
  return { path, memory: device.memory };
};

// A C end: resolves its JSON lines one by one.
function cEnd(args) {
  const proc = spawn(BENCH, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  // Listened for from the start: an end may exit before we wait for it.
  const exited = once(proc, 'exit');
  return { exited, next: async () => JSON.parse((await lines.next()).value) };
}
function nodeEnd(args) {
  const proc = fork(PEER, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = once(proc, 'exit');
  return { exited, next: async () => (await once(proc, 'message'))[0] };
}

async function nodeSource(memory, size) {
  const writer = new ChannelWriter(memory, { spin: 50 });
  const batch = new Array(64).fill(Buffer.alloc(size, 0x5a));
  const end = performance.now() + DURATION;
  while (performance.now() < end) await writer.sendBatch(batch);
  writer.close();
}

async function throughput(source, sink, size) {
  const { path, memory } = shmFile(`tp-${source}-${sink}-${size}`, ringSize(CAPACITY));
  formatRing(memory);
  const end = sink === 'c' ? cEnd(['sink', path, '0']) : nodeEnd(['shm-sink', path, '0']);
  await end.next();
  if (source === 'c') await cEnd(['source', path, '0', String(size), String(DURATION)]).next();
  else await nodeSource(memory, size);
  const r = await end.next();
  await end.exited;
  return { msgs: (r.count / r.ms) * 1000, mbs: r.bytes / r.ms / 1000 };
}

async function roundTrip(pinger, echoer, size) {
  const capacity = 1 << 18;
  const { path, memory } = shmFile(`rt-${pinger}-${echoer}-${size}`, 2 * ringSize(capacity));
  formatRing(memory, { offset: 0, size: ringSize(capacity) });
  formatRing(memory, { offset: ringSize(capacity), size: ringSize(capacity) });
  const args = [path, '0', String(ringSize(capacity))];
  const echo = echoer === 'c' ? cEnd(['echo', ...args]) : nodeEnd(['shm-echo', ...args]);
  await echo.next();
  let result;
  if (pinger === 'c') {
    result = await cEnd(['ping', path, '0', String(ringSize(capacity)), String(size), String(ROUND_TRIPS)]).next();
  } else {
    const writer = new ChannelWriter(memory, { offset: 0, size: ringSize(capacity), spin: 50 });
    const reader = new ChannelReader(memory, { offset: ringSize(capacity), size: ringSize(capacity), spin: 50 });
    const msg = Buffer.alloc(size, 0x5a);
    const samples = [];
    const deadline = performance.now() + 1500;
    for (let i = 0; i < ROUND_TRIPS && performance.now() < deadline; i++) {
      const t = performance.now();
      await writer.send(msg);
      await reader.receive();
      if (i >= 50) samples.push((performance.now() - t) * 1000);
    }
    writer.close();
    samples.sort((a, b) => a - b);
    result = { p50: samples[samples.length >> 1], p99: samples[Math.floor(samples.length * 0.99)] };
  }
  await echo.exited;
  return result;
}

// Node↔Node and the two-process ceiling, as bench/run.mjs measures them.
function nodeBaseline(size) {
  const out = execFileSync(process.execPath, [RUN], {
    env: { ...process.env, BENCH_ONLY: 'shm,copy2p', BENCH_JSON: '1', BENCH_SIZES: String(size) },
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop())[size];
}

// The median of each field over the repeats (fields taken separately).
function medians(runs) {
  const result = {};
  for (const key of Object.keys(runs[0])) {
    const sorted = runs.map((r) => r[key]).sort((a, b) => a - b);
    result[key] = sorted[sorted.length >> 1];
  }
  return result;
}

const fmt = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0));
console.log(`ivshmem C bench: node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ${DURATION} ms per throughput run`);
try {
  for (const size of SIZES) {
    const runs = { 'C → C': [], 'C → Node': [], 'Node → C': [], 'Node → Node': [], ceiling: [] };
    for (let i = 0; i < REPEAT; i++) {
      const baseline = nodeBaseline(size);
      runs['Node → Node'].push(baseline.shm);
      runs.ceiling.push(baseline.copy2p);
      runs['C → C'].push({ ...(await throughput('c', 'c', size)), ...(await roundTrip('c', 'c', size)) });
      runs['C → Node'].push({ ...(await throughput('c', 'node', size)), ...(await roundTrip('c', 'node', size)) });
      runs['Node → C'].push({ ...(await throughput('node', 'c', size)), ...(await roundTrip('node', 'c', size)) });
    }
    const ceiling = medians(runs.ceiling);
    const rows = Object.fromEntries(['C → C', 'C → Node', 'Node → C', 'Node → Node'].map((name) => [name, medians(runs[name])]));
    console.log(`\n${size} B messages: medians of ${REPEAT} runs (round trips: the first end pings, the second echoes)`);
    console.log('  ends              msg/s       MB/s   RTT p50 µs  RTT p99 µs   MB/s vs 2-process ceiling');
    for (const [name, r] of Object.entries(rows)) {
      console.log(
        `  ${name.padEnd(12)} ${fmt(r.msgs).padStart(10)} ${r.mbs.toFixed(0).padStart(10)} ${r.p50.toFixed(1).padStart(12)} ${r.p99.toFixed(1).padStart(11)} ${`${((100 * r.mbs) / ceiling.mbs).toFixed(0)}%`.padStart(12)}`,
      );
    }
    console.log(`  2-process ceiling ${fmt(ceiling.msgs).padStart(6)} ${ceiling.mbs.toFixed(0).padStart(10)}`);
    const nn = rows['Node → Node'];
    console.log(
      `  ratios to Node → Node: C → C ${(rows['C → C'].msgs / nn.msgs).toFixed(1)}x msg/s, C → Node ${(rows['C → Node'].msgs / nn.msgs).toFixed(1)}x, Node → C ${(rows['Node → C'].msgs / nn.msgs).toFixed(1)}x; RTT p50 C↔C ${(rows['C → C'].p50 / nn.p50).toFixed(2)}x`,
    );
  }
} finally {
  for (const f of cleanups.reverse()) f();
}
