import { existsSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { createConnection } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer, openFile, type ServerPeerDevice } from '../../src/index.js';
import { shmPath } from '../helpers.js';
import { PeerProcess, startPeer } from './peer-process.js';

const servers: IvshmemServer[] = [];
const peers: PeerProcess[] = [];
const paths: string[] = [];
afterEach(async () => {
  await Promise.all(peers.splice(0).map((p) => (p.kill(), p.exit().catch(() => {}))));
  for (const s of servers.splice(0)) await s.close();
  for (const p of paths.splice(0)) rmSync(p, { force: true });
});

async function start(options: { vectors?: number; size?: number } = {}): Promise<IvshmemServer> {
  const socket = shmPath('sock');
  paths.push(socket);
  const server = await IvshmemServer.listen({ socket, ...options });
  servers.push(server);
  return server;
}

async function spawnPeer(server: IvshmemServer) {
  const started = await startPeer(server.socketPath);
  peers.push(started.peer);
  return started;
}

describe('IvshmemServer with host peers in separate processes', () => {
  it('delivers every vector of every peer to exactly the right eventfd', async () => {
    const vectors = 3;
    const server = await start({ vectors, size: 1 << 16 });
    const started = [];
    for (let i = 0; i < 3; i++) started.push(await spawnPeer(server));
    expect(started.map((s) => s.id)).toEqual([0, 1, 2]);
    expect(started.every((s) => s.vectors === vectors && s.size === 1 << 16)).toBe(true);
    // Wait until everyone knows everyone.
    for (const s of started) {
      for (const other of started) {
        if (other.id > s.id) await s.peer.next((e) => e.event === 'peer-connected' && e.id === other.id);
      }
    }
    for (const sender of started) {
      for (const target of started) {
        if (target === sender) continue;
        for (let vector = 0; vector < vectors; vector++) {
          sender.peer.send({ op: 'ring', peer: target.id, vector });
          const got = await target.peer.event('interrupt');
          expect(got).toMatchObject({ vector, count: 1 });
        }
      }
    }
    // Nothing else arrived anywhere: each peer got exactly (peers - 1) doorbells per vector.
    for (const s of started) {
      s.peer.send({ op: 'tally' });
      const { tally } = await s.peer.event('tally');
      expect(tally).toEqual([2, 2, 2]);
      expect(s.peer.events.filter((e) => e.event === 'interrupt')).toEqual([]);
    }
  });

  it('announces connects and disconnects to everyone, and a SIGKILLed peer is reported gone', async () => {
    const server = await start();
    const serverSaw: string[] = [];
    server.on('peer-connected', (p) => serverSaw.push(`+${p.id}`));
    server.on('peer-disconnected', (p) => serverSaw.push(`-${p.id}`));
    const a = await spawnPeer(server);
    const b = await spawnPeer(server);
    expect(b.peers.map((p) => p.id)).toEqual([a.id]);
    await a.peer.next((e) => e.event === 'peer-connected' && e.id === b.id);
    const c = await spawnPeer(server);
    await a.peer.next((e) => e.event === 'peer-connected' && e.id === c.id);
    await b.peer.next((e) => e.event === 'peer-connected' && e.id === c.id);

    await b.peer.exit();
    await a.peer.next((e) => e.event === 'peer-disconnected' && e.id === b.id);
    await c.peer.next((e) => e.event === 'peer-disconnected' && e.id === b.id);

    c.peer.kill();
    await a.peer.next((e) => e.event === 'peer-disconnected' && e.id === c.id);
    expect(serverSaw).toEqual(['+0', '+1', '+2', '-1', '-2']);
    expect(server.peers).toEqual([{ id: a.id, vectors: 1 }]);
  });

  it('drops a client that sends data, tells the others, and keeps serving them', async () => {
    const server = await start({ vectors: 2 });
    const a = await spawnPeer(server);
    const b = await spawnPeer(server);
    await a.peer.next((e) => e.event === 'peer-connected' && e.id === b.id);

    const reasons: string[] = [];
    server.on('peer-disconnected', (_p, reason) => reasons.push(reason));
    const garbage = createConnection(server.socketPath);
    garbage.on('error', () => {});
    const rogueId = await a.peer.next((e) => e.event === 'peer-connected');
    // Both must have heard of it: a peer whose vectors were still queued for b when it was
    // dropped is taken back unsent, and b is (rightly) never told it left.
    await b.peer.next((e) => e.event === 'peer-connected' && e.id === rogueId.id);
    garbage.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await a.peer.next((e) => e.event === 'peer-disconnected' && e.id === rogueId.id);
    await b.peer.next((e) => e.event === 'peer-disconnected' && e.id === rogueId.id);
    expect(reasons[0]).toMatch(/sent data/);
    garbage.destroy();

    a.peer.send({ op: 'ring', peer: b.id, vector: 1 });
    expect(await b.peer.event('interrupt')).toMatchObject({ vector: 1, count: 1 });
    expect(server.peers.map((p) => p.id)).toEqual([a.id, b.id]);
  });

  it('serves 200 peers on one server, each seeing the 199 others', async () => {
    const server = await start({ vectors: 1 });
    const processes = 4;
    const each = 50;
    const groups = Array.from({ length: processes }, () => new PeerProcess(['many', server.socketPath, `${each}/${processes * each}`]));
    peers.push(...groups);
    const ids = new Set<number>();
    for (const g of groups) for (const id of ((await g.event('connected', 60_000)).ids as number[])) ids.add(id);
    expect(ids.size).toBe(200);
    for (const g of groups) await g.event('complete', 60_000);
    expect(server.peers.length).toBe(200);
  }, 120_000);

  it('queues messages for a client that does not read, without holding up anyone else', async () => {
    const server = await start({ vectors: 64 });
    const { native } = await import('../../src/native.js');
    // A raw client that reads nothing until the end: its socket buffer fills up.
    const slow = native.socketConnect(server.socketPath);
    const others: ServerPeerDevice[] = [];
    for (let i = 0; i < 10; i++) others.push(await connect(server.socketPath, { vectors: 64 }));
    expect(server.peers.length).toBe(11);
    // Now read everything: version, ID, memory, its own 64 eventfds, then 64 per newcomer, in order.
    const expected = [0, 0, -1, ...Array(64).fill(0), ...others.flatMap((d) => Array(64).fill(d.id))];
    const got: number[] = [];
    let fds = 0;
    const buf = new Uint8Array(8);
    const deadline = Date.now() + 10_000;
    while (got.length < expected.length && Date.now() < deadline) {
      const r = native.socketReceive(slow, buf);
      if (r === null) {
        await new Promise((res) => setTimeout(res, 5));
        continue;
      }
      expect(r.bytes).toBe(8);
      got.push(Number(new DataView(buf.buffer).getBigInt64(0, true)));
      for (const fd of r.fds) native.close(fd);
      fds += r.fds.length;
    }
    expect(got).toEqual(expected);
    expect(fds).toBe(1 + 64 + 10 * 64);
    native.close(slow);
    for (const d of others) d.close();
  });

  it('never sends a reused fd number: queued fds stay the ones they were', async () => {
    const server = await start({ vectors: 64 });
    const { native } = await import('../../src/native.js');
    const { openSync, closeSync, readlinkSync } = await import('node:fs');
    const slow = native.socketConnect(server.socketPath);
    // Peers that come and go while the slow client's messages about them are still queued.
    for (let i = 0; i < 6; i++) (await connect(server.socketPath, { vectors: 64 })).close();
    await new Promise((r) => setTimeout(r, 50));
    // Whatever takes the freed fd numbers now must not reach the slow client.
    const decoys = Array.from({ length: 400 }, () => openSync('/etc/hostname', 'r'));
    const buf = new Uint8Array(8);
    const kinds = new Map<string, number>();
    const view = new DataView(buf.buffer);
    const values: bigint[] = [];
    const vectorsOf = new Map<bigint, number>();
    const gone = new Set<bigint>();
    for (let idle = 0; idle < 20; ) {
      const r = native.socketReceive(slow, buf);
      if (r === null) {
        idle++;
        await new Promise((res) => setTimeout(res, 5));
        continue;
      }
      idle = 0;
      const value = view.getBigInt64(0, true);
      values.push(value);
      if (values.length > 2 && value >= 0n) {
        if (r.fds.length === 1) vectorsOf.set(value, (vectorsOf.get(value) ?? 0) + 1);
        else gone.add(value);
      }
      for (const fd of r.fds) {
        const target = readlinkSync(`/proc/self/fd/${fd}`);
        const kind = target.startsWith('anon_inode:[eventfd]') ? 'eventfd' : target.startsWith('/memfd:ivshmem') ? 'shm' : target;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        native.close(fd);
      }
    }
    for (const fd of decoys) closeSync(fd);
    native.close(slow);
    // Only what the server meant to send: its memory and eventfds, never a decoy. The vectors of
    // peers that left before they went out are taken back, so at most 6 × 64 of theirs arrive.
    const { shm, eventfd, ...others } = Object.fromEntries(kinds);
    expect({ shm, others }).toEqual({ shm: 1, others: {} });
    // Its own 64; of each departed peer, all 64 vectors and a goodbye, some and a goodbye (it
    // left while they went out), or nothing at all (all taken back, no goodbye needed).
    const own = values[1]!;
    expect(vectorsOf.get(own)).toBe(64);
    expect(gone.has(own)).toBe(false);
    const departed = [...new Set([...vectorsOf.keys(), ...gone])].filter((id) => id !== own);
    expect(departed.length).toBeLessThanOrEqual(6);
    for (const id of departed) {
      const got = vectorsOf.get(id) ?? 0;
      expect({ id, got, gone: gone.has(id) }).toEqual({ id, got: expect.any(Number), gone: true });
      // A goodbye for a peer it never heard of would be a protocol error in the client.
      expect(got).toBeGreaterThanOrEqual(1);
      expect(got).toBeLessThanOrEqual(64);
    }
    expect(eventfd).toBe([...vectorsOf.values()].reduce((a, b) => a + b, 0));
  });

  it('refuses peers beyond its limit with a log line, and serves again once one leaves', async () => {
    const socket = shmPath('sock');
    paths.push(socket);
    const server = await IvshmemServer.listen({ socket, maxPeers: 2 });
    servers.push(server);
    const lines: string[] = [];
    server.on('log', (l) => lines.push(l));
    const a = await connect(socket);
    const b = await connect(socket);
    await expect(connect(socket, { timeout: 2000 })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_PROTOCOL', message: expect.stringMatching(/closed the connection during setup/) });
    expect(lines.some((l) => /refused a connection: 2 peers are connected/.test(l))).toBe(true);
    a.close();
    await new Promise((r) => setTimeout(r, 50));
    const c = await connect(socket);
    expect(c.id).toBe(2);
    b.close();
    c.close();
  });

  it('reassigns a released ID only after the others', async () => {
    const server = await start();
    const first = await connect(server.socketPath);
    const second = await connect(server.socketPath);
    second.close();
    const third = await connect(server.socketPath);
    expect([first.id, second.id, third.id]).toEqual([0, 1, 2]);
    first.close();
    third.close();
  });
});

describe('IvshmemServer lifecycle', () => {
  it('removes its socket and memory on close and restarts on the same path with fresh, zeroed memory', async () => {
    const server = await start({ size: 8192 });
    const { socketPath, shmPath: shm } = server;
    const dev = await connect(socketPath);
    new Uint8Array(dev.memory).fill(7);
    dev.close();
    await server.close();
    expect(existsSync(socketPath)).toBe(false);
    expect(existsSync(shm)).toBe(false);

    const again = await IvshmemServer.listen({ socket: socketPath, size: 8192 });
    servers.push(again);
    const dev2 = await connect(socketPath);
    expect(new Uint8Array(dev2.memory).every((b) => b === 0)).toBe(true);
    dev2.close();
  });

  it('takes over a stale socket file but refuses one a live server listens on, without connecting to it', async () => {
    const server = await start();
    const seen: number[] = [];
    server.on('peer-connected', (p) => seen.push(p.id));
    await expect(IvshmemServer.listen({ socket: server.socketPath })).rejects.toMatchObject({ code: 'ERR_IVSHMEM_ADDRESS_IN_USE', path: server.socketPath });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([]);
    // A socket file with nobody behind it, as a crashed server leaves.
    const file = shmPath('stale');
    paths.push(file);
    const { native } = await import('../../src/native.js');
    native.close(native.socketListen(file));
    expect(existsSync(file)).toBe(true);
    const replaced = await IvshmemServer.listen({ socket: file });
    servers.push(replaced);
    const dev = await connect(file);
    expect(dev.id).toBe(0);
    dev.close();
  });

  it('never reuses existing memory unless asked, and keeps its contents when asked', async () => {
    const shm = shmPath('shm');
    paths.push(shm);
    const seed = openFile(shm, { size: 4096, create: true });
    new Uint8Array(seed.memory).set([1, 2, 3]);
    seed.close();
    const socket = shmPath('sock');
    paths.push(socket);
    await expect(IvshmemServer.listen({ socket, shm, size: 4096 })).rejects.toThrow(/already exists.*reuseShm/);
    const server = await IvshmemServer.listen({ socket, shm, size: 4096, reuseShm: true });
    servers.push(server);
    // A named file cannot be sealed: connecting to it is accepting that risk.
    const dev = await connect(socket, { sealedMemory: 'warn' });
    expect([...new Uint8Array(dev.memory, 0, 3)]).toEqual([1, 2, 3]);
    dev.close();
    await server.close();
    expect(readFileSync(shm).subarray(0, 3)).toEqual(Buffer.from([1, 2, 3]));
    // Shrinking it would kill everyone who maps it with SIGBUS.
    truncateSync(shm, 8192);
    await expect(IvshmemServer.listen({ socket, shm, size: 4096, reuseShm: true })).rejects.toThrow(/is 8192 bytes, larger than the 4096 asked for/);
  });

  it('rounds sizes up to a power of two and says so', async () => {
    const socket = shmPath('sock');
    paths.push(socket);
    const server = await IvshmemServer.listen({ socket, size: 5000 });
    servers.push(server);
    const lines: string[] = [];
    server.on('log', (l) => lines.push(l));
    await new Promise((r) => setImmediate(r));
    expect(server.size).toBe(8192);
    expect(lines[0]).toMatch(/5000 is not a power of two: using 8192/);
  });

  it('rejects bad options clearly', async () => {
    await expect(IvshmemServer.listen({ socket: shmPath('x'), vectors: 65 })).rejects.toThrow(/vectors must be an integer 1\.\.64/);
    await expect(IvshmemServer.listen({ socket: shmPath('x'), vectors: 0 })).rejects.toThrow(/vectors/);
    await expect(IvshmemServer.listen({ socket: shmPath('x'), size: -1 })).rejects.toThrow(/size must be a positive/);
    await expect(IvshmemServer.listen({ socket: '' })).rejects.toThrow(/socket must be a path/);
  });
});

describe('connect()', () => {
  it('sees the same memory as other peers and rings itself', async () => {
    const server = await start({ vectors: 2 });
    const a = await connect(server.socketPath, { vectors: 2 });
    const b: ServerPeerDevice = await connect(server.socketPath);
    new Uint8Array(a.memory)[100] = 42;
    expect(new Uint8Array(b.memory)[100]).toBe(42);
    const self = b.waitInterrupt(1);
    b.ring(b.id, 1);
    expect(await self).toBe(1);
    expect(() => b.ring(a.id, 2)).toThrow(/vector must be an integer 0\.\.1/);
    expect(() => b.ring(70000, 0)).toThrow(/peer must be an integer 0\.\.65535/);
    // A doorbell to a peer that is not there is dropped, as the device drops it.
    expect(() => b.ring(999, 0)).not.toThrow();
    a.close();
    b.close();
  });

  it('reports a missing server with the socket path', async () => {
    const path = shmPath('nosock');
    await expect(connect(path)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'connect', path });
  });

  it('tells the device when the server goes away', async () => {
    const server = await start();
    const dev = await connect(server.socketPath);
    const gone = new Promise<unknown>((resolve) => dev.once('disconnect', resolve));
    await server.close();
    expect(await gone).toBeUndefined();
    expect(dev.connected).toBe(false);
    dev.close();
  });
});
