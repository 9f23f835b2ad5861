// A worker whose watched device keeps receiving doorbells while the worker is torn down: its
// loop still turns with JavaScript forbidden, and the watcher's callback must then do nothing.
// It used to abort the whole process ("FATAL ERROR: Error::Error napi_define_properties").
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixtures, shmPath } from '../helpers.js';

const sockets: string[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) rmSync(s, { force: true });
});

function run(mode: 'terminate' | 'exit', rounds: number) {
  const socket = shmPath(`teardown-${mode}`);
  sockets.push(socket);
  return spawnSync(process.execPath, [join(fixtures, 'watcher-teardown.mjs'), mode, socket, String(rounds)], { encoding: 'utf8', timeout: 120_000 });
}

describe('a watcher in a worker torn down while doorbells arrive', () => {
  it('worker.terminate() with the worker blocked and doorbells pending: the process goes on', () => {
    for (let i = 0; i < 3; i++) {
      const r = run('terminate', 5);
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    }
  }, 120_000);

  it('process.exit() in the main thread with such a worker: the process exits with its code', () => {
    for (let i = 0; i < 3; i++) {
      const r = run('exit', 2);
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    }
  }, 120_000);
});
