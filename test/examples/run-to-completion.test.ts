// The documented run-to-completion example runs as published (it imports the package by name),
// so it cannot rot: a worker serving 300 blocking round trips over our server, then EOF.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

describe('examples/run-to-completion.mjs', () => {
  it.each(['0', '50'])('serves every request from a blocking worker and ends at EOF (spin %s µs)', async (spin) => {
    const { stdout } = await promisify(execFile)(process.execPath, [join(root, 'examples', 'run-to-completion.mjs'), '300', spin], { cwd: root, timeout: 60_000 });
    expect(stdout).toMatch(new RegExp(`^300 round trips \\(300 served by the worker\\), spin ${spin} µs: p50 [\\d.]+ µs, p99 [\\d.]+ µs\\n$`));
  }, 90_000);
});
