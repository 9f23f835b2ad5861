import type { ChildProcess } from 'node:child_process';
import { child, exitCode } from '../helpers.js';

export interface PeerEvent {
  event: string;
  [key: string]: unknown;
}

/** A peer in its own process (test/fixtures/server-peer.mjs), with its events queued. */
export class PeerProcess {
  readonly proc: ChildProcess;
  readonly events: PeerEvent[] = [];
  #waiters: Array<() => void> = [];

  constructor(args: string[]) {
    this.proc = args[0] === 'bus' ? child('bus-peer.mjs', args.slice(1)) : child('server-peer.mjs', args);
    this.proc.on('message', (msg) => {
      this.events.push(msg as PeerEvent);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.proc.on('exit', () => {
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Takes the first queued event matching `match`, waiting up to `ms` for it. */
  async next(match: (e: PeerEvent) => boolean, ms = 10_000): Promise<PeerEvent> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.events.findIndex(match);
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`peer process ended while waiting (exit ${this.proc.exitCode ?? this.proc.signalCode})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting; queued: ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  event(name: string, ms?: number): Promise<PeerEvent> {
    return this.next((e) => e.event === name, ms);
  }

  send(cmd: object): void {
    this.proc.send(cmd);
  }

  async exit(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    if (this.proc.connected) this.proc.send({ op: 'exit' });
    await exitCode(this.proc);
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}

/** Starts a peer process and waits until it is connected. */
export async function startPeer(socket: string): Promise<{ peer: PeerProcess; id: number; vectors: number; size: number; peers: Array<{ id: number }> }> {
  const peer = new PeerProcess(['peer', socket]);
  const ready = await peer.event('ready');
  return { peer, ...(ready as unknown as { id: number; vectors: number; size: number; peers: Array<{ id: number }> }) };
}
