// The lab benchmark inside one guest (`ivshmem bench --lab` boots two). Guest "a" drives: it
// tells "b" over a control TCP connection which workload comes next, waits until b is ready,
// measures, and collects b's side. Both guests have an ivshmem-doorbell device (VFIO) on the
// same server and a virtio-net link (a 10.0.0.1, b 10.0.0.2).
// Usage: guest.mjs a|b <floor binary> <settings JSON>
// Prints one JSON line; a's holds every measurement.
import { spawn } from 'node:child_process';
import { readlinkSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { connect, createServer } from 'node:net';
import { basename } from 'node:path';
import { attach, ChannelReader, ChannelWriter, deviceWaitStrategy, formatRing, openDevice, ringSize } from '../../dist/index.js';
import { guestDevices } from '../../dist/testing/guest-env.js';

const [role, floor, settingsText] = process.argv.slice(2);
const settings = JSON.parse(settingsText);
const { rounds, floorRounds, warmup, tcpStreamBytes, channelStreamBytes, rtcSpin } = settings;
const profileRows = new Set(settings.profile ?? []);
const profiles = {};
const A = '10.0.0.1';
const B = '10.0.0.2';
const CONTROL_PORT = 7000;
const MSG = 64;
const RING = 1 << 20;
// Each raw-channel workload gets its own pair of rings: no workload reads another's leftovers.
const slotOffset = (slot) => slot * 2 * ringSize(RING);
const doorbell = guestDevices().find((d) => d.kind === 'doorbell');
const STEP_TIMEOUT = 180_000;

// --- the control connection: JSON lines, one message per line
function control(socket) {
  const queue = [];
  const waiting = [];
  let text = '';
  let failure = null;
  const fail = (error) => {
    failure = error;
    for (const w of waiting.splice(0)) w.reject(error);
  };
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    text += chunk;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
      const message = JSON.parse(text.slice(0, nl));
      text = text.slice(nl + 1);
      if (message.error) fail(new Error(`guest ${role === 'a' ? 'b' : 'a'}: ${message.error}`));
      else if (waiting.length) waiting.shift().resolve(message);
      else queue.push(message);
    }
  });
  socket.on('close', () => fail(new Error('the control connection closed')));
  socket.on('error', fail);
  return {
    send: (message) => socket.write(`${JSON.stringify(message)}\n`),
    next(what) {
      if (queue.length) return Promise.resolve(queue.shift());
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} from the other guest within ${STEP_TIMEOUT / 1000} s`)), STEP_TIMEOUT);
        waiting.push({
          resolve: (m) => (clearTimeout(timer), resolve(m)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        });
      });
    },
    close: () => socket.end(),
  };
}

async function connectRetry(host, port, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const socket = await new Promise((resolve) => {
      const s = connect(port, host, () => resolve(s));
      s.once('error', () => resolve(null));
    });
    if (socket) return socket;
    if (Date.now() > end) throw new Error(`no connection to ${host}:${port} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function listenOnce(port) {
  const server = createServer();
  server.listen(port, '0.0.0.0');
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.once('connection', (socket) => {
      server.close();
      resolve(socket);
    });
  });
}

// --- the C floor: a child process with the device bound to vfio-pci, then released
function sysfs(path, value) {
  writeFileSync(path, value);
}

function bindVfio(address) {
  sysfs(`/sys/bus/pci/devices/${address}/driver_override`, 'vfio-pci');
  sysfs('/sys/bus/pci/drivers/vfio-pci/bind', address);
}

function unbindVfio(address) {
  try {
    if (basename(readlinkSync(`/sys/bus/pci/devices/${address}/driver`)) === 'vfio-pci') sysfs('/sys/bus/pci/drivers/vfio-pci/unbind', address);
  } finally {
    sysfs(`/sys/bus/pci/devices/${address}/driver_override`, '\n');
  }
}

/** Runs the floor binary; resolves `ready` at its {"ready":true} line and `done` with its last JSON line. */
function runFloor(args) {
  const child = spawn(floor, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let markReady;
  const ready = new Promise((resolve) => (markReady = resolve));
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    out += chunk;
    if (out.includes('{"ready":true}')) markReady();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => (err += chunk));
  const done = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${basename(floor)} ${args.join(' ')}: exit ${code}: ${err.trim()}`));
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
  done.catch(() => markReady());
  return { ready, done };
}

// --- round trips
async function roundTrips(count, once) {
  for (let i = 0; i < warmup; i++) await once(i);
  const samples = new Array(count);
  const cpu = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await once(i);
    samples[i] = performance.now() - start;
  }
  const used = process.cpuUsage(cpu);
  return { samples: samples.map((ms) => Math.round(ms * 1000 * 100) / 100), cpuUs: Math.round((used.user + used.system) / count) };
}

function roundTripsSync(count, once) {
  for (let i = 0; i < warmup; i++) once(i);
  const samples = new Array(count);
  const cpu = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    once(i);
    samples[i] = performance.now() - start;
  }
  const used = process.cpuUsage(cpu);
  return { samples: samples.map((ms) => Math.round(ms * 1000 * 100) / 100), cpuUs: Math.round((used.user + used.system) / count) };
}

const total = (n) => n + warmup;

// --- a CPU profile of one workload (only when asked: the profiler slows what it watches)
async function profiled(name, measure) {
  if (!profileRows.has(name)) return measure();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  const result = await measure();
  const { profile } = await session.post('Profiler.stop');
  session.disconnect();
  profiles[name] = topFunctions(profile, 15);
  return result;
}

// Self time per function, as shares of all samples.
function topFunctions(profile, count) {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const hits = new Map();
  for (const id of profile.samples) {
    const { functionName, url, lineNumber } = byNode.get(id).callFrame;
    const key = `${functionName || '(anonymous)'} ${url ? `${basename(url)}:${lineNumber + 1}` : ''}`.trim();
    hits.set(key, (hits.get(key) ?? 0) + 1);
  }
  const all = profile.samples.length;
  return [...hits]
    .sort((x, y) => y[1] - x[1])
    .slice(0, count)
    .map(([fn, n]) => ({ fn, percent: Math.round((n / all) * 1000) / 10 }));
}

// --- the two rings of a raw channel workload: each guest formats the ring it writes
function rings(dev, slot, peer, options = {}) {
  const wait = deviceWaitStrategy(dev, { peer });
  const base = slotOffset(slot);
  const size = ringSize(RING);
  const mine = role === 'a' ? base : base + size;
  const theirs = role === 'a' ? base + size : base;
  formatRing(dev.memory, { offset: mine, size });
  const writer = new ChannelWriter(dev.memory, { offset: mine, size, wait, ...options });
  // The other guest's ring exists once it says ready: only then is a reader made.
  return { writer, reader: () => new ChannelReader(dev.memory, { offset: theirs, size, wait, ...options }) };
}

// --- a stream's receiver rate: bytes after the first arrival over the time since
function streamMeter(expected) {
  let received = 0;
  let first = 0;
  let firstBytes = 0;
  return {
    add(bytes) {
      if (received === 0) {
        first = performance.now();
        firstBytes = bytes;
      }
      received += bytes;
      return received >= expected;
    },
    result() {
      const seconds = (performance.now() - first) / 1000;
      return { bytes: received, mbPerS: Math.round(((received - firstBytes) / 1e6 / seconds) * 10) / 10 };
    },
  };
}

// ============ guest b: follows a's lead
async function echoSide() {
  const ctl = control(await listenOnce(CONTROL_PORT));
  ctl.send({ hello: true, id: doorbell.peerId });
  const { id: peer } = await ctl.next('hello');
  let dev = null;
  for (;;) {
    const step = await ctl.next('step');
    try {
      if (step.name === 'end') break;
      ctl.send(await echoStep(step));
    } catch (error) {
      ctl.send({ error: error?.stack ?? String(error) });
      throw error;
    }
  }
  dev?.close();
  ctl.close();
  return { role };

  // Listens, tells a to go ahead, and resolves with a's connection.
  function acceptWhenReady(port) {
    const socket = listenOnce(port);
    ctl.send({ ready: true });
    return socket;
  }

  async function echoStep(step) {
    switch (step.name) {
      case 'c-doorbell': {
        bindVfio(doorbell.address);
        try {
          const run = runFloor(['doorbell', doorbell.address, 'echo', String(peer), String(step.count), '0']);
          await run.ready;
          ctl.send({ ready: true });
          await run.done;
        } finally {
          unbindVfio(doorbell.address);
        }
        return { done: true };
      }
      case 'c-tcp': {
        const run = runFloor(['tcp-server', '7001', String(step.count), String(MSG)]);
        await run.ready;
        ctl.send({ ready: true });
        await run.done;
        return { done: true };
      }
      case 'open':
        dev = openDevice(doorbell.address, { backend: 'vfio', bind: true });
        return { done: true };
      case 'bus': {
        const bus = await attach(dev, { name: 'b', heartbeat: 5000 });
        const from = await bus.waitForPeer('a', { signal: AbortSignal.timeout(STEP_TIMEOUT) });
        const out = bus.open(from, 'pong');
        ctl.send({ ready: true });
        const inbox = await bus.accept('ping', { from, signal: AbortSignal.timeout(STEP_TIMEOUT) });
        for (let i = 0; i < step.count; i++) await out.send(await inbox.receive());
        await ctl.next('bus end');
        bus.close();
        // The bus leaves its region behind; the raw rings below are formatted over it.
        return { done: true };
      }
      case 'node-doorbell': {
        const words = new Int32Array(dev.memory, slotOffset(5), 2);
        let last = Atomics.load(words, 0);
        // A stale doorbell (from an earlier workload) finds the word unchanged and is ignored.
        const echo = () => {
          const seen = Atomics.load(words, 0);
          if (seen === last) return;
          last = seen;
          Atomics.store(words, 1, seen);
          dev.ring(peer, 0);
        };
        dev.on('interrupt', echo);
        ctl.send({ ready: true });
        await ctl.next('doorbell end');
        dev.off('interrupt', echo);
        return { done: true };
      }
      case 'channel': {
        const { writer, reader } = rings(dev, step.slot, peer, { spin: step.spin });
        ctl.send({ ready: true });
        const inbox = reader();
        if (step.sync) {
          // No options object unless there is an option: each one is validated per call.
          const options = step.spin === undefined ? undefined : { spin: step.spin };
          for (let i = 0; i < step.count; i++) writer.sendSync(inbox.receiveSync(options), options);
        } else {
          for (let i = 0; i < step.count; i++) await writer.send(await inbox.receive());
        }
        writer.close();
        inbox.close();
        return { done: true };
      }
      case 'node-tcp': {
        const s = await acceptWhenReady(7002);
        s.setNoDelay(true);
        let pending = 0;
        await new Promise((resolve, reject) => {
          let left = step.count;
          s.on('data', (chunk) => {
            pending += chunk.length;
            while (pending >= MSG) {
              pending -= MSG;
              s.write(Buffer.alloc(MSG));
              if (--left === 0) resolve();
            }
          });
          s.on('error', reject);
        });
        s.end();
        return { done: true };
      }
      case 'tcp-stream': {
        const s = await acceptWhenReady(7003);
        const meter = streamMeter(step.bytes);
        await new Promise((resolve, reject) => {
          s.on('data', (chunk) => meter.add(chunk.length) && resolve());
          s.on('error', reject);
        });
        const result = meter.result();
        s.destroy();
        return { done: true, ...result };
      }
      case 'channel-stream': {
        const base = slotOffset(step.slot);
        const size = ringSize(RING);
        ctl.send({ ready: true });
        const inbox = new ChannelReader(dev.memory, { offset: base, size, wait: deviceWaitStrategy(dev, { peer }) });
        const meter = streamMeter(step.bytes);
        let complete = false;
        while (!complete && (await inbox.ready())) {
          inbox.drain((_data, _at, length) => {
            if (meter.add(length)) complete = true;
          });
        }
        const result = meter.result();
        inbox.close();
        return { done: true, ...result };
      }
      default:
        throw new Error(`unknown step ${step.name}`);
    }
  }
}

// ============ guest a: drives and measures
async function driveSide() {
  const ctl = control(await connectRetry(B, CONTROL_PORT));
  ctl.send({ hello: true, id: doorbell.peerId });
  const { id: peer } = await ctl.next('hello');
  const rows = {};
  const streams = {};
  const skipped = {};
  const step = async (message, measure) => {
    ctl.send(message);
    await ctl.next(`${message.name} ready`);
    const result = await measure();
    const done = await ctl.next(`${message.name} done`);
    return { result, done };
  };

  // C floors first, before any Node workload touched the device.
  bindVfio(doorbell.address);
  try {
    const { result } = await step({ name: 'c-doorbell', count: total(floorRounds) }, () =>
      runFloor(['doorbell', doorbell.address, 'ping', String(peer), String(total(floorRounds)), '0']).done,
    );
    rows['c-doorbell'] = { samples: result.samples.slice(warmup) };
  } finally {
    unbindVfio(doorbell.address);
  }
  {
    const { result } = await step({ name: 'c-tcp', count: total(floorRounds) }, () =>
      runFloor(['tcp-client', B, '7001', String(total(floorRounds)), String(MSG)]).done,
    );
    rows['c-tcp'] = { samples: result.samples.slice(warmup) };
  }

  const dev = openDevice(doorbell.address, { backend: 'vfio', bind: true });
  ctl.send({ name: 'open' });
  await ctl.next('open');

  // The bus first: it formats the whole region, which the raw rings below then reuse. It
  // refuses memory holding anything (the C floor's words), so that is cleared first.
  new Uint8Array(dev.memory).fill(0);
  {
    const bus = await attach(dev, { name: 'a', heartbeat: 5000 });
    ctl.send({ name: 'bus', count: total(rounds) });
    const to = await bus.waitForPeer('b', { signal: AbortSignal.timeout(STEP_TIMEOUT) });
    const out = bus.open(to, 'ping');
    await ctl.next('bus ready');
    const inbox = await bus.accept('pong', { from: to, signal: AbortSignal.timeout(STEP_TIMEOUT) });
    const message = new Uint8Array(MSG);
    rows.bus = await profiled('bus', () =>
      roundTrips(rounds, async () => {
        await out.send(message);
        await inbox.receive();
      }),
    );
    ctl.send({ name: 'bus end' });
    await ctl.next('bus done');
    bus.close();
  }

  {
    // As the C floor: a sequence number in one word, echoed into the next, and a doorbell.
    const words = new Int32Array(dev.memory, slotOffset(5), 2);
    let seq = 0;
    let wake;
    const onInterrupt = () => {
      if (Atomics.load(words, 1) === seq) wake?.();
    };
    dev.on('interrupt', onInterrupt);
    ctl.send({ name: 'node-doorbell' });
    await ctl.next('doorbell ready');
    rows['node-doorbell'] = await profiled('node-doorbell', () =>
      roundTrips(rounds, () => {
        const woken = new Promise((resolve) => (wake = resolve));
        Atomics.store(words, 0, ++seq);
        dev.ring(peer, 0);
        return woken;
      }),
    );
    dev.off('interrupt', onInterrupt);
    ctl.send({ name: 'doorbell end' });
    await ctl.next('doorbell done');
  }

  const message = new Uint8Array(MSG);
  const channelRow = async (name, slot, spinUs, sync) => {
    const options = spinUs === undefined ? undefined : { spin: spinUs };
    const { writer, reader } = rings(dev, slot, peer, options);
    ctl.send({ name: 'channel', slot, spin: spinUs, sync, count: total(rounds) });
    await ctl.next(`${name} ready`);
    const inbox = reader();
    rows[name] = await profiled(name, async () =>
      sync
        ? roundTripsSync(rounds, () => {
            writer.sendSync(message, options);
            inbox.receiveSync(options);
          })
        : roundTrips(rounds, async () => {
            await writer.send(message);
            await inbox.receive();
          }),
    );
    writer.close();
    inbox.close();
    await ctl.next(`${name} done`);
  };
  await channelRow('channel-spin', 0, undefined, false);
  await channelRow('channel-spin0', 1, 0, false);
  if (typeof ChannelReader.prototype.receiveSync === 'function') await channelRow('channel-rtc', 2, rtcSpin, true);
  else skipped['channel-rtc'] = 'this build has no receiveSync';

  {
    const { result } = await step({ name: 'node-tcp', count: total(rounds) }, async () => {
      const s = await connectRetry(B, 7002);
      s.setNoDelay(true);
      let got = 0;
      let wake;
      s.on('data', (chunk) => {
        got += chunk.length;
        if (got >= MSG) {
          got -= MSG;
          wake();
        }
      });
      const r = await profiled('node-tcp', () =>
        roundTrips(rounds, () => {
          const back = new Promise((resolve) => (wake = resolve));
          s.write(message);
          return back;
        }),
      );
      s.end();
      return r;
    });
    rows['node-tcp'] = result;
  }

  for (const size of [4096, 65536]) {
    const chunk = Buffer.alloc(size, 0x5a);
    const { done } = await step({ name: 'tcp-stream', bytes: tcpStreamBytes }, async () => {
      const s = await connectRetry(B, 7003);
      await profiled(`tcp-${size / 1024}k`, async () => {
        for (let sent = 0; sent < tcpStreamBytes; sent += size) {
          if (!s.write(chunk)) await new Promise((resolve) => s.once('drain', resolve));
        }
        // b closes once it has everything.
        await new Promise((resolve) => s.on('close', resolve).on('error', resolve));
      });
    });
    streams[`tcp-${size / 1024}k`] = done;
  }

  for (const [i, size] of [4096, 65536].entries()) {
    const slot = 3 + i;
    const size_ = ringSize(RING);
    formatRing(dev.memory, { offset: slotOffset(slot), size: size_ });
    const writer = new ChannelWriter(dev.memory, { offset: slotOffset(slot), size: size_, wait: deviceWaitStrategy(dev, { peer }) });
    const chunk = new Uint8Array(size).fill(0x5a);
    const batch = new Array(16).fill(chunk);
    const { done } = await step({ name: 'channel-stream', slot, bytes: channelStreamBytes }, () =>
      profiled(`channel-${size / 1024}k`, async () => {
        for (let sent = 0; sent < channelStreamBytes; sent += size * batch.length) await writer.sendBatch(batch);
      }),
    );
    writer.close();
    streams[`channel-${size / 1024}k`] = done;
  }

  ctl.send({ name: 'end' });
  ctl.close();
  dev.close();
  for (const row of Object.values(rows)) row.samples = row.samples.map((v) => Math.round(v * 100) / 100);
  return { role, id: doorbell.peerId, peer, rows, streams, skipped, profiles };
}

(role === 'a' ? driveSide() : echoSide()).then(
  (result) => {
    console.log(JSON.stringify(result));
    process.exit(0);
  },
  (error) => {
    console.error(error?.stack ?? String(error));
    process.exit(1);
  },
);
