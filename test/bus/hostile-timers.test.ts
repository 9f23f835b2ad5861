// A hostile peer's memory meets the bus in code that runs from timers, watchers and events
// (scans, drains, heartbeats, directory offers, eviction, doorbell wake-ups). Whatever it
// holds, the victim keeps running: the channel concerned fails with a typed error, and
// nothing is thrown out of the event loop.
import { rmSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { attach, connect, IvshmemServer, openFile, type Bus, type ChannelReader } from '../../src/index.js';
import { RING_FIELDS, SLOT, SLOT_SIZE } from '../../src/spec/index.js';
import { child, shmPath } from '../helpers.js';
import { ringsOf } from './rings.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

type Event = { event: string; [key: string]: unknown };

// Every message of a child, and its exit, as they come.
function watch(proc: ChildProcess) {
  const events: Event[] = [];
  const waiters: Array<() => void> = [];
  let exit: { code: number | null; signal: string | null } | null = null;
  const poke = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  proc.on('message', (m) => (events.push(m as Event), poke()));
  proc.on('exit', (code, signal) => ((exit = { code, signal }), poke()));
  cleanup.push(() => proc.exitCode === null && proc.kill('SIGKILL'));
  return {
    proc,
    events,
    get exit() {
      return exit;
    },
    /** The first message named `name`; rejects if the child exits first. */
    async next(name: string): Promise<Event> {
      for (;;) {
        const found = events.find((e) => e.event === name);
        if (found) return found;
        if (exit) throw new Error(`the child exited (${JSON.stringify(exit)}) before '${name}'; it said: ${JSON.stringify(events)}`);
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    async exited(): Promise<{ code: number | null; signal: string | null }> {
      while (!exit) await new Promise<void>((resolve) => waiters.push(resolve));
      return exit;
    },
  };
}

describe('a peer that corrupts its own ring and leaves', () => {
  it('fails the victim\'s channel with a typed error; the victim process keeps running', async () => {
    const path = shmPath('leave');
    openFile(path, { size: 1 << 20, create: true }).close();
    cleanup.push(() => rmSync(path, { force: true }));

    const victim = watch(child('hostile-bus-peer.mjs', ['victim', path]));
    await victim.next('ready');
    const hostile = watch(child('hostile-bus-peer.mjs', ['hostile', path]));
    await hostile.next('opened');
    await victim.next('accepted');
    hostile.proc.send({ op: 'corrupt-and-leave' });
    expect(await hostile.exited()).toEqual({ code: 0, signal: null });

    const failed = await victim.next('failed');
    expect(failed).toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'tail' });
    expect(await victim.next('alive')).toEqual({ event: 'alive', closed: false });
    expect(await victim.exited()).toEqual({ code: 0, signal: null });
    expect(victim.events).toContainEqual({ event: 'peer-down', name: 'hostile', reason: 'left' });
  });
});

// Two buses in this process on one server's memory, so scans also run from doorbells and from
// the server's peer-disconnected event; `raw` is the hostile peer's own view of the region.
async function pair(heartbeat: number) {
  const socket = shmPath('sock');
  const server = await IvshmemServer.listen({ socket, size: 1 << 20, vectors: 2 });
  const devA = await connect(socket);
  const devB = await connect(socket);
  cleanup.push(() => {
    devA.close();
    devB.close();
    void server.close();
  });
  const a = await attach(devA, { name: 'victim', heartbeat });
  const b = await attach(devB, { name: 'hostile', heartbeat });
  cleanup.push(() => (a.close(), b.close()));
  const writer = b.open(await b.waitForPeer('victim'), 'c');
  const reader = await a.accept('c');
  const raw = new Uint32Array(devB.memory);
  return { devA, devB, a, b, writer, reader, raw, ring: ringsOf(b, raw)[0]! };
}

type Pair = Awaited<ReturnType<typeof pair>>;

const TAIL_LO = RING_FIELDS.tail / 4;
const WRITER_CLOSED = RING_FIELDS.writerClosed / 4;

// Errors that escaped to the process while `body` ran, and until `settled()` holds.
async function escapes(body: () => void | Promise<void>, settled: () => boolean): Promise<unknown[]> {
  const escaped: unknown[] = [];
  const onError = (error: unknown): void => void escaped.push(error);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  try {
    await body();
    while (!settled() && escaped.length === 0) await new Promise((r) => setTimeout(r, 5));
    // A few more turns: an escape right after the state changed still counts.
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  }
  return escaped;
}

describe('hostile memory on every path the bus runs by itself', () => {
  for (const [path, heartbeat, doorbell] of [['scan timer', 100, false], ['control doorbell', 60_000, true]] as const) {
    it(`${path}: a writer that claims to be closed with a tail no ring can have, and stays`, async () => {
      // With the long heartbeat the scan timer stays quiet: only the doorbell makes the victim look.
      const { devB, a, reader, raw, ring } = await pair(heartbeat);
      const escaped = await escapes(() => {
        Atomics.store(raw, ring / 4 + TAIL_LO, 3);
        Atomics.store(raw, ring / 4 + WRITER_CLOSED, 1);
        if (doorbell) devB.ring(a.self.deviceId!, 0);
      }, () => reader.failure !== null);
      expect(escaped).toEqual([]);
      expect(reader.failure).toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'tail' });
    });
  }

  it('leave and disconnect events: the peer corrupts its tail, leaves and drops its connection', async () => {
    const { devB, b, reader, raw, ring } = await pair(100);
    const escaped = await escapes(() => {
      Atomics.store(raw, ring / 4 + TAIL_LO, 3);
      b.close();
      devB.close();
    }, () => reader.failure !== null);
    expect(escaped).toEqual([]);
    expect(reader.failure?.code).toMatch(/^ERR_IVSHMEM_(CHANNEL_CORRUPT|PEER_GONE)$/);
  });

  it('drain: a channel left with unread records, its tail corrupted after its writer left', async () => {
    const { a, b, writer, reader, raw, ring } = await pair(100);
    writer.trySend(new Uint8Array([1, 2, 3]));
    const down = new Promise((resolve) => a.once('peer-down', resolve));
    b.close();
    await down;
    // The victim now drains what was sent; the section is still readable by anyone.
    const escaped = await escapes(() => {
      Atomics.store(raw, ring / 4 + TAIL_LO, 3);
    }, () => reader.failure !== null);
    expect(escaped).toEqual([]);
    expect(reader.failure).toMatchObject({ code: 'ERR_IVSHMEM_CHANNEL_CORRUPT', field: 'tail' });
  });

  it('directory offer: a ring with a corrupt header offered to a pending accept()', async () => {
    const { a, b, raw } = await pair(100);
    let reader: ChannelReader<Uint8Array> | null = null;
    void a.accept('d').then((r) => (reader = r));
    const escaped = await escapes(() => {
      const before = ringsOf(b, raw);
      b.open(a.self, 'd');
      // The header's capacity word, before the victim looked: no reader can use the ring.
      const added = ringsOf(b, raw).find((at) => !before.includes(at))!;
      Atomics.store(raw, (added + RING_FIELDS.capacity) / 4, 12345);
    }, () => reader !== null);
    expect(reader).not.toBeNull();
    expect(escaped).toEqual([]);
    await expect(reader!.receive()).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_IVSHMEM_CHANNEL_/) });
  });

  it('heartbeat timer: the victim\'s own slot taken away (eviction) closes its bus with a typed error', async () => {
    const { a, raw } = await pair(100);
    const closed = new Promise<unknown>((resolve) => a.once('close', resolve));
    const g = a.geometry;
    const escaped = await escapes(() => {
      // The slot's owner word: another peer "reclaimed" it.
      Atomics.store(raw, (g.tableOffset + a.self.slot * SLOT_SIZE + SLOT.owner) / 4, 0);
    }, () => a.closed);
    expect(escaped).toEqual([]);
    expect(await closed).toMatchObject({ code: 'ERR_IVSHMEM_EVICTED' });
  });
});

// Whatever throws inside an entry of the event loop into the bus (here: the bus's own listeners,
// which run inside its scans and events) fails that bus with a typed error; nothing leaves
// through the loop, and the process keeps running.
describe('one guard on every entry of the loop into the bus', () => {
  async function failedBy(a: Bus, trigger: () => void) {
    const closed = new Promise<Error | undefined>((resolve) => a.once('close', resolve));
    const escaped = await escapes(trigger, () => a.closed);
    return { escaped, reason: a.closed ? await closed : undefined };
  }

  const entries = [
    // A third peer joins: the victim's scan timer, or the doorbell the joiner rings, sees it come.
    { path: 'scan|control doorbell', event: 'peer-up', heartbeat: 100, trigger: (t: Pair) => void attach(t.devB, { name: 'third', heartbeat: 100 }).then((c) => cleanup.push(() => c.close())) },
    // Heartbeats too long to scan: only the control doorbell makes the victim look.
    { path: 'control doorbell', event: 'channel', heartbeat: 60_000, trigger: (t: Pair) => void t.b.open(t.a.self, 'e') },
    { path: 'peer-disconnected', event: 'peer-down', heartbeat: 60_000, trigger: (t: Pair) => t.devB.close() },
  ] as const;
  for (const { path, event, heartbeat, trigger } of entries) {
    it(`${path}: a ${event} listener that throws closes the bus with a typed error`, async () => {
      const t = await pair(heartbeat);
      t.a.on(event, () => {
        throw new Error('listener broke');
      });
      const { escaped, reason } = await failedBy(t.a, () => trigger(t));
      expect(escaped).toEqual([]);
      expect(reason).toMatchObject({ code: 'ERR_IVSHMEM_REGION', message: expect.stringMatching(new RegExp(`(${path}).*listener broke`)) });
    });
  }
});
