// Building and running the C library's programs from tests: one build (make under a lock, so
// test files running in parallel do not race), then processes that print JSON lines.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const cDir = join(import.meta.dirname, '..', '..', 'c');
export const peerBinary = join(cDir, 'build', 'ivs-peer');

/** Builds c/ (library, tools) with make; `target` for the test programs. */
export function buildC(target = 'all'): void {
  execFileSync('flock', [join(cDir, '.build.lock'), 'make', '-s', '-C', cDir, target], { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** A JSON line a C tool printed. */
export interface CEvent {
  event: string;
  [key: string]: unknown;
}

/** A running C tool: its events as they come, and how it ended. */
export class CProcess {
  readonly proc: ChildProcess;
  readonly events: CEvent[] = [];
  readonly #waiters: Array<{ test: (e: CEvent) => boolean; resolve: (e: CEvent) => void }> = [];
  readonly exited: Promise<number | null>;
  stderr = '';

  constructor(args: string[]) {
    this.proc = spawn(peerBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      let event: CEvent;
      try {
        event = JSON.parse(line) as CEvent;
      } catch {
        event = { event: 'text', line };
      }
      this.events.push(event);
      for (const w of [...this.#waiters]) {
        if (w.test(event)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(event);
        }
      }
    });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
  }

  /** The first event (already seen or coming) that matches. */
  next(event: string, match: Record<string, unknown> = {}): Promise<CEvent> {
    const test = (e: CEvent): boolean => e.event === event && Object.entries(match).every(([k, v]) => e[k] === v);
    const seen = this.events.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ test, resolve });
      void this.exited.then((code) => reject(new Error(`ivs-peer exited (${code}) before '${event}': ${JSON.stringify(this.events)} ${this.stderr}`)));
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.proc.exitCode === null) this.proc.kill(signal);
  }
}

export { checkPattern, pattern, patternLength, patternType } from '../fixtures/c-pattern.mjs';
