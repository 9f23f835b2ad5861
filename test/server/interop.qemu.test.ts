// QEMU's own ivshmem-doorbell device as a client of our server: no guest OS, the machine is
// driven through qtest (QEMU's test protocol on stdin/stdout), with real doorbells through BAR0.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, IvshmemServer, type ServerPeerDevice } from '../../src/index.js';
import { shmPath } from '../helpers.js';

const BAR0 = 0xfe000000;
const BAR2 = 0xc0000000;
const SLOT = 3;

/** A QEMU process under qtest with one ivshmem-doorbell device in slot 3. */
class Qtest {
  readonly proc: ChildProcessWithoutNullStreams;
  #lines: string[] = [];
  #wake: (() => void) | null = null;

  constructor(socket: string, vectors: number) {
    this.proc = spawn('qemu-system-x86_64', [
      // -S: the firmware must not run, or it races us on the 0xcf8/0xcfc config latch.
      '-M', 'q35', '-S', '-qtest', 'stdio', '-display', 'none', '-nodefaults', '-no-user-config',
      '-chardev', `socket,path=${socket},id=c0`,
      '-device', `ivshmem-doorbell,chardev=c0,vectors=${vectors},addr=${SLOT}`,
    ]);
    this.proc.stderr.on('data', (d) => process.stderr.write(`[qemu] ${d}`));
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      // Interrupt notices come unasked; only command answers matter here.
      if (line.startsWith('IRQ')) return;
      this.#lines.push(line);
      this.#wake?.();
    });
  }

  async command(cmd: string): Promise<string> {
    this.proc.stdin.write(`${cmd}\n`);
    while (this.#lines.length === 0) {
      if (this.proc.exitCode !== null) throw new Error(`qemu exited (${this.proc.exitCode}) before answering ${cmd}`);
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const answer = this.#lines.shift()!;
    if (!answer.startsWith('OK')) throw new Error(`qtest: ${cmd} → ${answer}`);
    return answer;
  }

  async configWrite(reg: number, value: number): Promise<void> {
    await this.command(`outl 0xcf8 0x${((0x80000000 | (SLOT << 11) | reg) >>> 0).toString(16)}`);
    await this.command(`outl 0xcfc 0x${value.toString(16)}`);
  }

  async configRead(reg: number): Promise<number> {
    await this.command(`outl 0xcf8 0x${((0x80000000 | (SLOT << 11) | reg) >>> 0).toString(16)}`);
    return Number((await this.command('inl 0xcfc')).split(' ')[1]);
  }

  async readl(addr: number): Promise<number> {
    return Number((await this.command(`readl 0x${addr.toString(16)}`)).split(' ')[1]);
  }

  async writel(addr: number, value: number): Promise<void> {
    await this.command(`writel 0x${addr.toString(16)} 0x${value.toString(16)}`);
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGKILL');
    await once(this.proc, 'exit');
  }
}

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('QEMU ivshmem-doorbell against our server', () => {
  it('completes the setup handshake, reads its ID through IVPosition, shares memory and rings a host peer', async () => {
    const socket = shmPath('qemu');
    const server = await IvshmemServer.listen({ socket, vectors: 2, size: 1 << 20 });
    cleanup.push(() => server.close(), () => rmSync(socket, { force: true }));
    const host: ServerPeerDevice = await connect(socket);
    cleanup.push(() => host.close());
    expect(host.id).toBe(0);

    const seen = new Promise<number>((resolve) => host.once('peer-connected', resolve));
    const qemu = new Qtest(socket, 2);
    cleanup.push(() => qemu.stop());
    const qemuId = await seen;
    expect(qemuId).toBe(1);
    expect(server.peers).toEqual([{ id: 0, vectors: 2 }, { id: 1, vectors: 2 }]);
    expect(host.peers).toEqual([{ id: 1, vectors: 2 }]);

    // The device is there as ivshmem-doorbell: vendor 1af4, device 1110.
    expect(await qemu.configRead(0x00)).toBe(0x11101af4);
    // Place BAR0 (registers) and the 64-bit BAR2 (memory), enable memory decoding.
    await qemu.configWrite(0x10, BAR0);
    await qemu.configWrite(0x18, BAR2);
    await qemu.configWrite(0x1c, 0);
    await qemu.configWrite(0x04, 0x6);

    expect(await qemu.readl(BAR0 + 0x08)).toBe(qemuId);

    // The memory QEMU got from our server is the memory the host peer mapped.
    new DataView(host.memory).setUint32(64, 0x12345678, true);
    expect(await qemu.readl(BAR2 + 64)).toBe(0x12345678);
    await qemu.writel(BAR2 + 128, 0xcafef00d);
    expect(new DataView(host.memory).getUint32(128, true)).toBe(0xcafef00d);

    // QEMU rings the host peer through its doorbell register, on vector 1.
    const rung = host.waitInterrupt(1);
    await qemu.writel(BAR0 + 0x0c, (host.id << 16) | 1);
    expect(await rung).toBe(1);

    // QEMU going away reaches the host peer.
    const gone = new Promise<number>((resolve) => host.once('peer-disconnected', resolve));
    await qemu.stop();
    expect(await gone).toBe(qemuId);
    expect(server.peers).toEqual([{ id: 0, vectors: 2 }]);
  });

  it('QEMU refuses a server that offers more vectors than its device has, and our server goes on', async () => {
    const socket = shmPath('qemu-vec');
    const server = await IvshmemServer.listen({ socket, vectors: 4, size: 1 << 20 });
    cleanup.push(() => server.close(), () => rmSync(socket, { force: true }));
    const lines: string[] = [];
    server.on('log', (l) => lines.push(l));
    const qemu = new Qtest(socket, 2);
    cleanup.push(() => qemu.stop());
    await new Promise<void>((resolve) => {
      let stderr = '';
      qemu.proc.stderr.on('data', (d) => {
        stderr += d;
        if (/Too many eventfd received, device has 2 vectors/.test(stderr)) resolve();
      });
    });
    await qemu.stop();
    // Our server saw it come and go, and is still serving.
    await new Promise((r) => setTimeout(r, 50));
    expect(lines.some((l) => /peer 0 disconnected/.test(l))).toBe(true);
    const dev = await connect(socket);
    expect(dev.vectors).toBe(4);
    dev.close();
  });
});
