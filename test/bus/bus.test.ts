import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { attach, connect, IvshmemServer, openFile, utf8Codec, type Bus, type BusPeer, type Device } from '../../src/index.js';
import { shmPath } from '../helpers.js';
import { PeerProcess } from '../server/peer-process.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function tempFile(size = 1 << 20): string {
  const path = shmPath('bus');
  openFile(path, { size, create: true }).close();
  cleanup.push(() => rmSync(path, { force: true }));
  return path;
}

function file(path: string): Device {
  const dev = openFile(path);
  cleanup.push(() => dev.close());
  return dev;
}

async function join(device: Device, name: string, heartbeat = 100): Promise<Bus> {
  const bus = await attach(device, { name, heartbeat });
  cleanup.push(() => bus.close());
  return bus;
}

function busPeer(kind: 'server' | 'file' | 'file-id', where: string, name: string, heartbeat = 100, id?: number): PeerProcess {
  const p = new PeerProcess(['bus', kind, where, name, String(heartbeat), ...(id === undefined ? [] : [String(id)])]);
  cleanup.push(() => (p.kill(), p.exit().catch(() => {})));
  return p;
}

function nextEvent<T extends unknown[]>(bus: Bus, event: 'peer-up' | 'peer-down', match: (...args: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve) => {
    const on = (...args: unknown[]): void => {
      if (!match(...(args as T))) return;
      bus.off(event, on as never);
      resolve(args as T);
    };
    bus.on(event, on as never);
  });
}

describe('the bus lifecycle', () => {
  it('survives losing its slot with no error listener, and says why on close', async () => {
    const path = tempFile();
    const dev = file(path);
    const bus = await attach(dev, { name: 'victim', heartbeat: 20 });
    const closed = new Promise<Error | undefined>((resolve) => bus.once('close', resolve));
    // A hostile (or impatient) peer frees our slot.
    new Uint32Array(dev.memory)[(bus.geometry.tableOffset + bus.self.slot * 256) / 4] = 0;
    const reason = await closed;
    expect(reason).toMatchObject({ code: 'ERR_IVSHMEM_EVICTED' });
    expect(bus.closed).toBe(true);
    expect(() => bus.open('x', 'y')).toThrow(/bus is closed/);
  });

  it('closes cleanly after its device was closed', async () => {
    const path = tempFile();
    const dev = openFile(path);
    const bus = await attach(dev, { name: 'orphan' });
    dev.close();
    expect(() => bus.open('anyone', 'x')).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
    expect(() => bus.close()).not.toThrow();
  });

  it('hands over a failing reader, not a throw, for a channel whose ring its writer corrupted', async () => {
    const path = tempFile();
    const a = await join(file(path), 'a');
    const b = await join(file(path), 'b');
    const got = new Promise<unknown>((resolve) => {
      b.on('channel', (ch) => {
        const reader = ch.accept();
        reader.receive().then(resolve, resolve);
      });
    });
    const devA = file(path);
    const w = a.open(await a.waitForPeer('b'), 'bad');
    // Scribble over the ring header's magic before b looks at it.
    const entry = new Uint32Array(devA.memory, a.geometry.sectionsOffset + a.self.slot * a.geometry.sectionSize, 32);
    new Uint32Array(devA.memory, entry[4]!, 4)[0] = 0xdeadbeef;
    void w;
    expect(await got).toMatchObject({ name: 'ChannelError', code: 'ERR_IVSHMEM_CHANNEL_CORRUPT' });
  });
});

describe('the region', () => {
  it('is formatted by the first peer and joined by the next, who share one geometry', async () => {
    const path = tempFile();
    const a = await join(file(path), 'a');
    const b = await join(file(path), 'b');
    expect(b.geometry).toEqual(a.geometry);
    expect(a.geometry).toMatchObject({ profile: 'shared', maxPeers: 16, entries: 32, regionSize: 1 << 20 });
    expect([a.self.slot, b.self.slot]).toEqual([0, 1]);
    await nextEvent(a, 'peer-up', (p: BusPeer) => p.name === 'b');
    expect(a.peers.map((p) => p.name)).toEqual(['b']);
    expect(b.peers.map((p) => p.name)).toEqual(['a']);
  });

  it('refuses a region of another layout version, and does not rewrite it', async () => {
    const path = tempFile();
    const first = await join(file(path), 'first');
    first.close();
    const dev = file(path);
    new DataView(dev.memory).setUint32(8, 2, true); // version 2.0
    const before = Buffer.from(dev.memory.slice(0, 4096));
    await expect(attach(dev, { name: 'late' })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_REGION_VERSION', message: expect.stringMatching(/version 2\.0; this library reads version 1/) });
    expect(Buffer.from(dev.memory.slice(0, 4096))).toEqual(before);
  });

  it('refuses memory that holds something else, and a corrupt geometry', async () => {
    const path = tempFile();
    const dev = file(path);
    new Uint8Array(dev.memory).set(Buffer.from('not a bus region'));
    await expect(attach(dev, { name: 'x' })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_REGION', message: expect.stringMatching(/something other than an ivshmem bus region/) });
    expect(Buffer.from(dev.memory.slice(0, 16)).toString()).toBe('not a bus region');

    const path2 = tempFile();
    (await join(file(path2), 'first')).close();
    const dev2 = file(path2);
    new DataView(dev2.memory).setUint32(44, 0x7fff0000, true); // section size
    await expect(attach(dev2, { name: 'y' })).rejects.toThrow(/superblock is corrupt/);
  });

  it('formats the pairwise profile for exactly two peers, and says when a region is full', async () => {
    const path = tempFile(64 << 10);
    const a = await attach(file(path), { name: 'a', profile: 'pairwise', heartbeat: 100 });
    cleanup.push(() => a.close());
    await join(file(path), 'b');
    expect(a.geometry.maxPeers).toBe(2);
    await expect(attach(file(path), { name: 'c' })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_BUS_FULL' });
    await expect(attach(file(tempFile(8192)), { name: 'tiny' })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_SIZE' });
  });
});

describe('channels between peers', () => {
  it('open and accept by name, both ways, in order, with EOF on close', async () => {
    const path = tempFile();
    const alice = await join(file(path), 'alice');
    const bob = await join(file(path), 'bob');
    const bobSeen = await alice.waitForPeer('bob');
    const toBob = alice.open(bobSeen, 'chat', { codec: utf8Codec });
    const fromAlice = await bob.accept('chat', { codec: utf8Codec });
    const toAlice = bob.open('alice', 'chat', { codec: utf8Codec });
    const fromBob = await alice.accept('chat', { from: 'bob', codec: utf8Codec });
    const sending = (async () => {
      for (let n = 0; n < 1000; n++) await toBob.send(`hello ${n}`);
      toBob.close();
    })();
    const echoing = (async () => {
      let i = 0;
      for await (const msg of fromAlice) {
        expect(msg).toBe(`hello ${i++}`);
        await toAlice.send(msg.replace('hello', 'hi'));
      }
      expect(i).toBe(1000);
      toAlice.close();
    })();
    const replies: string[] = [];
    for await (const msg of fromBob) replies.push(msg);
    await Promise.all([sending, echoing]);
    expect(replies.length).toBe(1000);
    expect(replies[999]).toBe('hi 999');
  });

  it('offers each channel once, also after it ended and the writer opened others', async () => {
    const path = tempFile();
    const a = await join(file(path), 'a');
    const b = await join(file(path), 'b');
    const offered: string[] = [];
    b.on('channel', (ch) => {
      offered.push(ch.name);
      void (async () => {
        for await (const _ of ch.accept()) void _;
      })();
    });
    const peer = await a.waitForPeer('b');
    for (const name of ['one', 'two', 'three']) {
      const w = a.open(peer, name);
      await w.send(new Uint8Array([1]));
      w.close();
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(offered).toEqual(['one', 'two', 'three']);
  });

  it('delivers channels opened before anyone accepts, through the channel event', async () => {
    const path = tempFile();
    const a = await join(file(path), 'a');
    const b = await join(file(path), 'b');
    const incoming = new Promise<{ name: string; from: string; first: string | undefined }>((resolve) => {
      b.on('channel', async (ch) => {
        const reader = ch.accept({ codec: utf8Codec });
        resolve({ name: ch.name, from: ch.from.name, first: await reader.receive() });
      });
    });
    const w = a.open(await a.waitForPeer('b'), 'events', { codec: utf8Codec });
    await w.send('first');
    expect(await incoming).toEqual({ name: 'events', from: 'a', first: 'first' });
  });

  it('refuses unknown peers and bad names clearly', async () => {
    const a = await join(file(tempFile()), 'a');
    expect(() => a.open('nobody', 'x')).toThrow(/no peer "nobody" is up/);
    await expect(attach(file(tempFile()), { name: '' })).rejects.toThrow(/name must be 1\.\.64 bytes/);
    await expect(attach(file(tempFile()), { name: 'x'.repeat(65) })).rejects.toThrow(/name must be 1\.\.64 bytes/);
  });

  it('says when the section is full, and reuses rings whose both ends are done', async () => {
    const path = tempFile(256 << 10);
    const a = await attach(file(path), { name: 'a', maxPeers: 2, heartbeat: 100, channelCapacity: 32768 });
    cleanup.push(() => a.close());
    const b = await join(file(path), 'b');
    const peer = await a.waitForPeer('b');
    const writers = [];
    let full: unknown;
    try {
      for (let i = 0; i < 10; i++) writers.push(a.open(peer, `c${i}`));
    } catch (error) {
      full = error;
    }
    expect(full).toMatchObject({ code: 'ERR_IVSHMEM_BUS_FULL' });
    expect(writers.length).toBeGreaterThan(1);
    const first = writers[0]!;
    first.close();
    (await b.accept('c0')).close();
    expect(() => a.open(peer, 'again')).not.toThrow();
  });
});

describe('liveness', () => {
  it('notices a SIGKILLed peer by its heartbeat, ends its channels with a typed error, and frees its slot', async () => {
    const path = tempFile();
    const heartbeat = 100;
    const me = await join(file(path), 'me', heartbeat);
    const child = busPeer('file', path, 'echo', heartbeat);
    await child.event('ready');
    const echo = await me.waitForPeer('echo');
    const ping = me.open(echo, 'ping', { codec: utf8Codec });
    const pong = await me.accept('pong', { from: echo, codec: utf8Codec });
    await ping.send('hello');
    expect(await pong.receive()).toBe('HELLO');

    const down = nextEvent<[BusPeer, string]>(me, 'peer-down');
    const killedAt = performance.now();
    child.kill();
    const [peer, reason] = await down;
    const noticedAfter = performance.now() - killedAt;
    expect(peer.name).toBe('echo');
    expect(reason).toBe('heartbeat');
    // Two periods of silence, plus one scan interval and scheduling slack.
    expect(noticedAfter).toBeLessThan(2 * heartbeat + heartbeat / 4 + 400);
    await expect(pong.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PEER_GONE' });
    await expect(ping.send('anyone?')).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PEER_GONE' });

    // Its slot is free again: a restarted peer joins as a new session.
    const again = busPeer('file', path, 'echo', heartbeat);
    const ready = await again.event('ready');
    const back = await me.waitForPeer('echo');
    expect(back.session).toBe(ready.session);
    expect(back.session).not.toBe(echo.session);
    expect(back.slot).toBe(echo.slot);
  });

  it('over our server: a killed peer is down at once (disconnected), and its restart is a new session', async () => {
    const socket = shmPath('bus-sock');
    cleanup.push(() => rmSync(socket, { force: true }));
    const server = await IvshmemServer.listen({ socket, size: 1 << 20, vectors: 2 });
    cleanup.push(() => server.close());
    const dev = await connect(socket);
    cleanup.push(() => dev.close());
    const me = await join(dev, 'me', 1000);
    const child = busPeer('server', socket, 'echo', 1000);
    await child.event('ready');
    const echo = await me.waitForPeer('echo');
    expect(echo.deviceId).toBe(1);
    expect(echo.vectors).toBe(2);
    const ping = me.open(echo, 'ping', { codec: utf8Codec });
    const pong = await me.accept('pong', { from: echo, codec: utf8Codec });
    for (let i = 0; i < 200; i++) {
      await ping.send(`m${i}`);
      expect(await pong.receive()).toBe(`M${i}`);
    }
    const down = nextEvent<[BusPeer, string]>(me, 'peer-down');
    child.kill();
    const [, reason] = await down;
    expect(reason).toBe('disconnected');
    await expect(pong.receive()).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PEER_GONE' });

    const again = busPeer('server', socket, 'echo', 1000);
    await again.event('ready');
    const back = await me.waitForPeer('echo');
    expect(back.session).not.toBe(echo.session);
  });

  it('ends a dead peer\'s channels even for an observer that only sees its slot freed by another', async () => {
    const path = tempFile();
    const slow = await join(file(path), 'slow', 4000);
    const fast = await join(file(path), 'fast', 40);
    const child = busPeer('file', path, 'echo', 100);
    await child.event('ready');
    const echo = await slow.waitForPeer('echo');
    const ping = slow.open(echo, 'ping', { codec: utf8Codec });
    const pong = await slow.accept('pong', { from: echo, codec: utf8Codec });
    await ping.send('hi');
    expect(await pong.receive()).toBe('HI');
    const pending = pong.receive();
    const fastSaw = nextEvent<[BusPeer, string]>(fast, 'peer-down', (p) => p.name === 'echo');
    const slowSaw = nextEvent<[BusPeer, string]>(slow, 'peer-down', (p) => p.name === 'echo');
    child.kill();
    expect((await fastSaw)[1]).toBe('heartbeat');
    expect((await slowSaw)[1]).toBe('left');
    await expect(pending).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PEER_GONE' });
  });

  it('takes a restarted peer with the same ivshmem ID as a new session at once, replacing the dead one', async () => {
    const path = tempFile();
    const me = await join(file(path), 'me', 5000);
    const first = busPeer('file-id', path, 'guest', 5000, 7);
    await first.event('ready');
    const old = await me.waitForPeer('guest');
    expect(old.deviceId).toBe(7);
    const ping = me.open(old, 'ping', { codec: utf8Codec });
    first.kill();
    // Long heartbeats: nobody has noticed the death when the same ID comes back.
    const down = nextEvent<[BusPeer, string]>(me, 'peer-down');
    const second = busPeer('file-id', path, 'guest', 5000, 7);
    const ready = await second.event('ready');
    const [gone, reason] = await down;
    expect(gone.session).toBe(old.session);
    expect(['replaced', 'left']).toContain(reason);
    const back = await me.waitForPeer('guest');
    expect(back.session).toBe(ready.session);
    await expect(ping.send('to the old one?')).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PEER_GONE' });
  });

  it('lets others see a clean leave as "left", with channels drained to EOF', async () => {
    const path = tempFile();
    const a = await join(file(path), 'a');
    const b = await join(file(path), 'b');
    const w = b.open(await b.waitForPeer('a'), 'last-words', { codec: utf8Codec });
    const r = await a.accept('last-words', { codec: utf8Codec });
    await w.send('bye');
    const down = nextEvent<[BusPeer, string]>(a, 'peer-down');
    b.close();
    expect((await down)[1]).toBe('left');
    const got: string[] = [];
    for await (const m of r) got.push(m);
    expect(got).toEqual(['bye']);
  });
});
