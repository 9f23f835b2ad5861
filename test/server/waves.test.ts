// Regressions of the server's resources (issue 14 item 3, issue 11 defect 7): a client that
// never reads must not pin fds or memory, a client whose queue passes its bound is dropped, and
// over repeated waves of clients the server's fds and RSS come back to where they were. Counts
// and sizes are measured, never time.
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { native } from '../../src/native.js';
import { fixtures, message, shmPath } from '../helpers.js';

interface Stats {
  fds: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  peers: number[];
  drops: Array<{ id: number; reason: string }>;
}

const cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

class ServerProcess {
  readonly socket = shmPath('sock');
  readonly proc: ChildProcess;

  /** `nofile`: the server's fd limit (RLIMIT_NOFILE), set with prlimit(1). */
  constructor(options: object, limits: { nofile?: number } = {}) {
    const node = ['--expose-gc'];
    this.proc = fork(join(fixtures, 'server-host.mjs'), [this.socket, JSON.stringify(options)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      ...(limits.nofile ? { execPath: 'prlimit', execArgv: [`--nofile=${limits.nofile}`, process.execPath, ...node] } : { execArgv: node }),
    });
    cleanup.push(() => {
      this.proc.kill('SIGKILL');
      rmSync(this.socket, { force: true });
    });
  }

  async ready(): Promise<void> {
    await message(this.proc);
  }

  async stats(): Promise<Stats> {
    this.proc.send({ op: 'stats' });
    return (await message<Stats & { event: string }>(this.proc)) as Stats;
  }

  /** Stats once they satisfy `done` (the server learns of connects and hang-ups asynchronously). */
  async until(done: (s: Stats) => boolean): Promise<Stats> {
    for (;;) {
      const s = await this.stats();
      if (done(s)) return s;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Stats once the server serves exactly `peers` clients. */
  settled(peers: number): Promise<Stats> {
    return this.until((s) => s.peers.length === peers);
  }
}

/**
 * A real client that reads everything the server sends and closes each fd at once: the
 * lightest well-behaved peer, so that thousands fit in the test process.
 */
class ReadingClient {
  readonly fd: number;
  #watcher;
  #buf = new Uint8Array(8);
  #closed = false;

  constructor(fd: number) {
    this.fd = fd;
    this.#watcher = new native.Watcher(this.fd, () => this.#drain());
    this.#watcher.start(native.READABLE);
  }

  #drain(): void {
    for (;;) {
      let r;
      try {
        r = native.socketReceive(this.fd, this.#buf);
      } catch {
        return this.close();
      }
      if (r === null) return;
      for (const fd of r.fds) native.close(fd);
      if (r.bytes === 0) return this.close();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    native.close(this.fd);
  }
}

// A connection; a full listen backlog (EAGAIN) waits for the server to accept.
async function connectRaw(socket: string): Promise<number> {
  for (;;) {
    try {
      return native.socketConnect(socket);
    } catch (error) {
      if ((error as { code?: string }).code !== 'EAGAIN') throw error;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

async function clients(socket: string, count: number): Promise<ReadingClient[]> {
  const all: ReadingClient[] = [];
  while (all.length < count) {
    all.push(new ReadingClient(await connectRaw(socket)));
    // Readers read only when the event loop turns.
    await new Promise((r) => setImmediate(r));
  }
  return all;
}

// `count` reading clients and `idle` that read nothing, all connected at once (the server serves
// them all, beside the `staying` it had), then all gone.
async function wave(server: ServerProcess, count: number, idle = 0, staying = 0): Promise<void> {
  const idlers: number[] = [];
  while (idlers.length < idle) idlers.push(await connectRaw(server.socket));
  const all = await clients(server.socket, count);
  await server.settled(staying + count + idle);
  for (const c of all) c.close();
  for (const fd of idlers) native.close(fd);
}

describe('server resources over repeated waves of clients', () => {
  it('a client that never reads pins no fds of peers that came and went (fds back to baseline every wave)', async () => {
    const server = new ServerProcess({ vectors: 8, size: 65536 });
    await server.ready();
    const idle = native.socketConnect(server.socket);
    cleanup.push(() => native.close(idle));
    const baseline = await server.settled(1);
    const fds: number[] = [];
    for (let w = 0; w < 4; w++) {
      await wave(server, 100, 0, 1);
      fds.push((await server.settled(1)).fds);
    }
    expect(fds).toEqual([baseline.fds, baseline.fds, baseline.fds, baseline.fds]);
  }, 120_000);

  it('under a 256-fd limit, a client that never reads and 400 connect cycles leave the server serving newcomers', async () => {
    const server = new ServerProcess({ vectors: 1, size: 65536 }, { nofile: 256 });
    await server.ready();
    const idle = native.socketConnect(server.socket);
    cleanup.push(() => native.close(idle));
    const baseline = await server.settled(1);
    for (let i = 0; i < 400; i++) (await connect(server.socket, { vectors: 1, sealedMemory: 'require' })).close();
    const after = await server.settled(1);
    expect(after.fds).toBe(baseline.fds);
    const late = await connect(server.socket, { vectors: 1, sealedMemory: 'require' });
    expect(late.peers).toEqual([{ id: 0, vectors: 1 }]);
    late.close();
  }, 120_000);

  it('drops a client whose queue passes its bound in messages, and only that client', async () => {
    const server = new ServerProcess({ vectors: 8, size: 65536, queueLimit: { messages: 1024, fds: 512 } });
    await server.ready();
    const idle = native.socketConnect(server.socket);
    cleanup.push(() => native.close(idle));
    await server.settled(1);
    const staying = await clients(server.socket, 100);
    cleanup.push(() => staying.forEach((c) => c.close()));
    // 100 newcomers × 8 vectors are 800 fds for the idle client: past its bound of 512 (+ setup).
    const s = await server.until((x) => x.peers.includes(100));
    expect(s.drops, JSON.stringify(s.drops)).toEqual([{ id: 0, reason: expect.stringMatching(/does not read/) }]);
    expect(s.peers).not.toContain(0);
  }, 60_000);

  it('fds, heap and RSS stay flat over 10 waves of 300 simultaneous clients, 20 of which never read', async () => {
    const server = new ServerProcess({ vectors: 1, size: 65536 });
    await server.ready();
    const after: Stats[] = [];
    for (let w = 0; w < 10; w++) {
      await wave(server, 280, 20);
      after.push(await server.settled(0));
    }
    const mb = (n: number): number => Math.round(n / 2 ** 20);
    console.log('RSS per wave (MB):', after.map((s) => mb(s.rss)).join(' '), '| RSS beside the heap (MB):', after.map((s) => mb(s.rss - s.heapTotal)).join(' '), '| heap used (MB):', after.map((s) => mb(s.heapUsed)).join(' '), '| heap total (MB):', after.map((s) => mb(s.heapTotal)).join(' '), '| fds:', after.map((s) => s.fds).join(' '));
    expect(new Set(after.map((s) => s.fds)).size).toBe(1);
    // What the collector cannot free is leaked: 1 KB per client would be 2.7 MB over waves 2..10.
    expect(after.at(-1)!.heapUsed - after[1]!.heapUsed).toBeLessThan(2 ** 20);
    // RSS beside V8's heap (whose use is checked above; V8 grows its reservation in a step, 14 →
    // 22 MB by wave 5 here, and RSS follows a wave later): the allocator's arenas grow to a
    // working size over the first waves and keep it (43 → 48 MB, then ±1 MB). So a late wave is
    // compared with one past the growth, not with the first: a plateau passes, a native leak of
    // 3 KB per client (3.5 MB over waves 7..10) fails.
    const beside = (s: Stats): number => s.rss - s.heapTotal;
    expect(beside(after[9]!) - beside(after[5]!)).toBeLessThan(3 * 2 ** 20);
  }, 300_000);
});
