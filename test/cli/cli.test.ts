import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/index.js';
import { parseSize } from '../../src/cli/args.js';
import { shmPath } from '../helpers.js';

const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
const run = promisify(execFile);
const paths: string[] = [];
afterEach(() => {
  for (const p of paths.splice(0)) rmSync(p, { force: true });
});

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('ivshmem server', () => {
  it('takes QEMU\'s flags, logs connects and disconnects, and shuts down cleanly on SIGTERM', async () => {
    const socket = shmPath('cli-sock');
    const pidfile = shmPath('cli-pid');
    const name = `ivshmem-test-cli-shm-${process.pid}`;
    paths.push(socket, pidfile, `/dev/shm/${name}`);
    const proc = spawn(process.execPath, [cli, 'server', '-S', socket, '-l', '5K', '-n', '3', '-M', name, '-p', pidfile, '-F', '-v']);
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    await until(() => out.includes('listening on'), 'the server to listen');
    expect(out).toMatch(/size 5120 is not a power of two: using 8192 bytes/);
    expect(out).toContain(`/dev/shm/${name}, 3 vector(s) per peer`);
    expect(readFileSync(pidfile, 'utf8').trim()).toBe(String(proc.pid));

    const dev = await connect(socket, { sealedMemory: 'warn' }); // -M: a named file, never sealed
    expect(dev.vectors).toBe(3);
    expect(dev.size).toBe(8192);
    await until(() => /peer 0 connected/.test(out), 'the connect line');
    dev.close();
    await until(() => /peer 0 disconnected: it hung up/.test(out), 'the disconnect line');
    expect(out).toMatch(/peers: none/);

    proc.kill('SIGTERM');
    const [code] = await once(proc, 'exit');
    expect(code).toBe(0);
    expect(out).toMatch(/SIGTERM: shutting down/);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(pidfile)).toBe(false);
    expect(existsSync(`/dev/shm/${name}`)).toBe(false);
  });

  it('explains bad flags in one line and exits 1', async () => {
    const err = await run(process.execPath, [cli, 'server', '-n', '100', '-S', shmPath('x')]).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr.trim()).toBe("ivshmem server: --vectors must be an integer 1..64, got '100'");
    const bad = await run(process.execPath, [cli, 'server', '--bogus']).catch((e: { stderr: string }) => e);
    expect((bad as { stderr: string }).stderr).toMatch(/unknown option --bogus/);
  });

  it('a --mode that is not octal is named as --mode and echoed as typed', async () => {
    const err = await run(process.execPath, [cli, 'server', '-S', shmPath('x'), '--mode', 'rw']).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr.trim()).toBe("ivshmem server: --mode must be octal permission bits 0..7777 (e.g. 600, 0660), got 'rw'");
  });

  it('parses sizes with K, M and G suffixes', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('4M')).toBe(4 << 20);
    expect(parseSize('1G')).toBe(1 << 30);
    expect(() => parseSize('4X')).toThrow(/not a number of bytes/);
  });
});

describe('ivshmem demo', () => {
  it('runs two peers on the bus over our server and reports round trips and the region', async () => {
    const { stdout } = await run(process.execPath, [cli, 'demo', '--rounds', '500']);
    expect(stdout).toMatch(/pong: connected as ivshmem peer 0, joined the bus in slot 0/);
    expect(stdout).toMatch(/ping: connected as ivshmem peer 1, joined the bus in slot 1/);
    expect(stdout).toMatch(/ping: found 'pong' in slot 0/);
    expect(stdout).toMatch(/ping: ping 1 -> pong 1/);
    expect(stdout).toMatch(/500 round trips over two channels, woken by doorbells/);
    expect(stdout).toMatch(/round trip p50 [\d.]+ µs, p99 [\d.]+ µs/);
    expect(stdout).toMatch(/100000 messages of 64 bytes one way and back/);
    expect(stdout).toMatch(/slot 0: 'pong' up, .* ivshmem ID 0, 2 vector\(s\)/);
    expect(stdout).toMatch(/channel 'to-pong' -> slot 0 \(open, vector 1/);
    expect(stdout).toMatch(/server: closed/);
  });
});

describe('ivshmem dump', () => {
  it('prints a live region without changing it, as text and JSON', async () => {
    const { attach, openFile, utf8Codec } = await import('../../src/index.js');
    const path = shmPath('dump');
    paths.push(path);
    const a = openFile(path, { size: 1 << 20, create: true });
    const b = openFile(path);
    const alice = await attach(a, { name: 'alice' });
    const bob = await attach(b, { name: 'bob' });
    const w = alice.open(await alice.waitForPeer('bob'), 'news', { codec: utf8Codec });
    await w.send('x'.repeat(100));
    const before = Buffer.from(a.memory.slice(0));
    const { stdout } = await run(process.execPath, [cli, 'dump', path]);
    expect(stdout).toMatch(/region: 1048576 bytes, shared, 16 peer slots/);
    expect(stdout).toMatch(/slot 0: 'alice' up/);
    expect(stdout).toMatch(/slot 1: 'bob' up/);
    expect(stdout).toMatch(/channel 'news' -> slot 1 \(open, vector 0, ring at \d+\+\d+\): head 0 tail 112 fill 112\//);
    const json = JSON.parse((await run(process.execPath, [cli, 'dump', '--json', path])).stdout);
    expect(json.peers.map((p: { name: string }) => p.name)).toEqual(['alice', 'bob']);
    expect(json.peers[0].channels[0].ring.fill).toBe(112);
    // Heartbeats may have ticked in between; nothing else may differ.
    const after = Buffer.from(a.memory.slice(0));
    for (const at of [alice.geometry.tableOffset + 16, alice.geometry.tableOffset + 256 + 16]) {
      before.writeUInt32LE(0, at);
      after.writeUInt32LE(0, at);
    }
    expect(after.equals(before)).toBe(true);
    alice.close();
    bob.close();
    a.close();
    b.close();
  });

  it('says what an empty or foreign region is', async () => {
    const path = shmPath('dump-empty');
    paths.push(path);
    const { openFile } = await import('../../src/index.js');
    const dev = openFile(path, { size: 65536, create: true });
    expect((await run(process.execPath, [cli, 'dump', path]).catch((e: { stdout: string }) => e)).stdout).toMatch(/region: empty/);
    new Uint8Array(dev.memory).set(Buffer.from('hello'));
    expect((await run(process.execPath, [cli, 'dump', path]).catch((e: { stdout: string }) => e)).stdout).toMatch(/not an ivshmem bus region/);
    dev.close();
  });
});

describe('ivshmem', () => {
  it('lists its commands and refuses unknown ones', async () => {
    const { stdout } = await run(process.execPath, [cli, '--help']);
    expect(stdout).toMatch(/server\s+run a QEMU-compatible ivshmem-server/);
    const err = await run(process.execPath, [cli, 'nope']).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr).toMatch(/unknown command 'nope'/);
  });
});
