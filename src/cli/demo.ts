import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatRegion, inspectRegion } from '../bus/index.js';
import { openFile } from '../device/index.js';
import { IvshmemServer } from '../server/index.js';
import { ivshmemError } from '../errors.js';
import { intFlag, parseArgs } from './args.js';

export const demoHelp = `ivshmem demo [--rounds N]: two peer processes over our server, no VM needed

Starts an ivshmem-server on a temporary socket and shared-memory file, forks two peer processes
that connect to it and join the bus as 'ping' and 'pong', opens a channel each way (rings in the
shared memory, doorbells to wake the reader), and prints what happened: round-trip times, a
one-way burst, and the region as \`ivshmem dump\` shows it.`;

interface Done {
  event: 'done';
  samples: string[];
  rounds: number;
  p50: number;
  p99: number;
  mean: number;
  burst: number;
  perSecond: number;
}

function next<T>(proc: ChildProcess, event: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: { event: string }): void => {
      if (msg.event !== event) return;
      proc.off('message', onMessage);
      proc.off('exit', onExit);
      resolve(msg as T);
    };
    const onExit = (code: number | null): void => reject(ivshmemError('ERR_IVSHMEM_PEER_GONE', `ivshmem demo: a demo peer exited (${code}) before '${event}'`));
    proc.on('message', onMessage);
    proc.once('exit', onExit);
  });
}

/** `ivshmem demo`. */
export async function demoCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, [{ long: 'rounds', value: true, help: '' }, { short: 'h', long: 'help', value: false, help: '' }], 'demo');
  if (flags.help) {
    console.log(demoHelp);
    return 0;
  }
  const rounds = intFlag(flags, 'rounds', 'demo', { min: 1, fallback: 10_000 })!;
  const dir = mkdtempSync(join(tmpdir(), 'ivshmem-demo-'));
  const server = await IvshmemServer.listen({ socket: join(dir, 'socket'), size: 4 << 20, vectors: 2 });
  server.on('log', (line) => console.log(`server: ${line}`));
  const peer = join(import.meta.dirname, 'demo-peer.js');
  const children: ChildProcess[] = [];
  try {
    const start = (role: string): ChildProcess => {
      const child = fork(peer, [server.socketPath, role, String(rounds)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(child);
      return child;
    };
    const pong = start('pong');
    const a = await next<{ id: number; slot: number }>(pong, 'connected');
    console.log(`pong: connected as ivshmem peer ${a.id}, joined the bus in slot ${a.slot} (pid ${pong.pid})`);
    const ping = start('ping');
    const b = await next<{ id: number; slot: number; size: number }>(ping, 'connected');
    console.log(`ping: connected as ivshmem peer ${b.id}, joined the bus in slot ${b.slot} (pid ${ping.pid}), ${b.size} bytes of shared memory`);
    const found = await next<{ name: string; slot: number }>(ping, 'peer');
    console.log(`ping: found '${found.name}' in slot ${found.slot}; opening channel 'to-pong', accepting 'to-ping'`);
    const done = await next<Done>(ping, 'done');
    for (const line of done.samples) console.log(`ping: ${line}`);
    console.log(`ping: ${done.rounds} round trips over two channels, woken by doorbells`);
    console.log(`      round trip p50 ${done.p50.toFixed(1)} µs, p99 ${done.p99.toFixed(1)} µs, mean ${done.mean.toFixed(1)} µs (${Math.round(1e6 / done.mean)} round trips/s)`);
    console.log(`ping: ${done.burst} messages of 64 bytes one way and back: ${Math.round(done.perSecond).toLocaleString('en-US')} messages/s`);
    const memory = openFile(server.shmPath, { readOnly: true });
    console.log(`\nthe region now (ivshmem dump ${server.shmPath}):\n${formatRegion(await inspectRegion(memory.memory))}\n`);
    memory.close();
    ping.send('stop');
    pong.send('stop');
    await Promise.all(children.map((c) => (c.exitCode === null ? once(c, 'exit') : null)));
    return 0;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
