// Errno values libuv has no name for still get their proper name as the error's code.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fixtures } from '../helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs node with `args` as nobody (root's CAP_SYS_RESOURCE would lift the limit) under `nofile`. */
export function asNobody(nofile: number, args: string[]): ReturnType<typeof spawnSync> {
  return spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'prlimit', `--nofile=${nofile}`, process.execPath, ...args], { encoding: 'utf8' });
}

describe('errno names', () => {
  it('ETOOMANYREFS (109, unknown to libuv) is the code, not "Unknown system error -109"', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ivshmem-errno-'));
    dirs.push(dir);
    chmodSync(dir, 0o777);
    const run = asNobody(256, [join(fixtures, 'fd-flood.mjs'), join(dir, 'sock')]);
    expect(run.stderr).toBe('');
    const out = JSON.parse(String(run.stdout));
    expect(out).toMatchObject({ code: 'ETOOMANYREFS', errno: 109, message: expect.stringMatching(/^ETOOMANYREFS: .*sendmsg/) });
    expect(out.sent).toBeGreaterThan(200);
  });
});
