import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IvshmemServer } from '../server/server.js';
import { parseArgs } from './args.js';

export const demoHelp = `ivshmem demo [--rounds N]: two peer processes over our server, no VM needed

Starts an ivshmem-server on a temporary socket and shared-memory file, forks two peers that
connect to it, ring each other's doorbells and pass messages through the shared memory, and
prints what happened with the round-trip times.`;

interface Done {
  event: 'done';
  samples: string[];
  rounds: number;
  p50: number;
  p99: number;
  mean: number;
}

function next<T>(proc: ChildProcess, event: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: { event: string }): void => {
      if (msg.event !== event) return;
      proc.off('message', onMessage);
      proc.off('exit', onExit);
      resolve(msg as T);
    };
    const onExit = (code: number | null): void => reject(new Error(`demo peer exited (${code}) before '${event}'`));
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
  const rounds = flags.rounds === undefined ? 10_000 : Number(flags.rounds);
  const dir = mkdtempSync(join(tmpdir(), 'ivshmem-demo-'));
  const server = await IvshmemServer.listen({ socket: join(dir, 'socket'), size: 1 << 20, vectors: 1 });
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
    const a = await next<{ id: number }>(pong, 'connected');
    console.log(`pong: connected as peer ${a.id} (pid ${pong.pid})`);
    const ping = start('ping');
    const b = await next<{ id: number; size: number }>(ping, 'connected');
    console.log(`ping: connected as peer ${b.id} (pid ${ping.pid}), ${b.size} bytes of shared memory`);
    const done = await next<Done>(ping, 'done');
    for (const line of done.samples) console.log(`ping: ${line}`);
    console.log(`ping: ${done.rounds} round trips through shared memory and doorbells`);
    console.log(`      round trip p50 ${done.p50.toFixed(1)} µs, p99 ${done.p99.toFixed(1)} µs, mean ${done.mean.toFixed(1)} µs (${Math.round(1e6 / done.mean)} round trips/s)`);
    pong.send('stop');
    await Promise.all(children.map((c) => (c.exitCode === null ? once(c, 'exit') : null)));
    return 0;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
