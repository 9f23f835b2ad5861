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

    const dev = await connect(socket);
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
    expect((err as { stderr: string }).stderr.trim()).toBe('ivshmem: vectors must be an integer 1..64, got 100');
    const bad = await run(process.execPath, [cli, 'server', '--bogus']).catch((e: { stderr: string }) => e);
    expect((bad as { stderr: string }).stderr).toMatch(/unknown option --bogus/);
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
  it('runs two peers over our server and reports round trips', async () => {
    const { stdout } = await run(process.execPath, [cli, 'demo', '--rounds', '500']);
    expect(stdout).toMatch(/pong: connected as peer 0/);
    expect(stdout).toMatch(/ping: connected as peer 1/);
    expect(stdout).toMatch(/ping: ping 1 -> pong 1/);
    expect(stdout).toMatch(/500 round trips through shared memory and doorbells/);
    expect(stdout).toMatch(/round trip p50 [\d.]+ µs, p99 [\d.]+ µs/);
    expect(stdout).toMatch(/server: closed/);
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
