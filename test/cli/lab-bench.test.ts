// `ivshmem bench --lab` without guests: the figures it derives from the guests' samples, its
// flag checks, and the C floor compiled with the system compiler and run over loopback TCP.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { compileFloor, runLabBench } from '../../src/cli/lab-bench.js';
import { formatReport, median, percentile, summarize, summarizeBoot, type BootData } from '../../src/cli/lab-bench-report.js';

const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), 'ivshmem-lab-bench-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// A boot where every row's samples are `scale` times 1..100 µs.
function boot(scale: Record<string, number>, streams: Record<string, number>): BootData {
  return {
    rows: Object.fromEntries(Object.entries(scale).map(([key, k]) => [key, { samples: range(1, 100).map((v) => v * k), cpuUs: 10 * k }])),
    streams: Object.fromEntries(Object.entries(streams).map(([key, mbPerS]) => [key, { bytes: 1 << 20, mbPerS }])),
  };
}

describe('lab benchmark figures', () => {
  it('takes nearest-rank percentiles and medians that skip missing values', () => {
    expect(percentile(range(1, 100).reverse(), 50)).toBe(50);
    expect(percentile(range(1, 100), 99)).toBe(99);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([Number.NaN, 5])).toBe(5);
    expect(median([])).toBeNaN();
  });

  it('forms the ratios within one boot', () => {
    const s = summarizeBoot(
      boot({ 'c-doorbell': 1, 'node-doorbell': 3, 'channel-spin': 6, 'channel-spin0': 4, 'channel-rtc': 2, 'node-tcp': 24 }, { 'channel-4k': 300, 'tcp-4k': 10, 'channel-64k': 400, 'tcp-64k': 40 }),
    );
    expect(s.rtt['channel-rtc']).toEqual({ p50: 100, p99: 198, cpuUs: 20, count: 100 });
    expect(s.ratios).toMatchObject({
      'tcp-over-channel': 4,
      'tcp-over-rtc': 12,
      'channel-over-c': 6,
      'rtc-over-c': 2,
      'rtc-over-c-p99': 2,
      'async-over-bare': 2,
      'stream-4k': 30,
      'stream-64k': 10,
    });
    expect(s.ratios['async0-over-bare']).toBeCloseTo(4 / 3);
  });

  it('takes medians across boots of figures and of same-boot ratios, and checks the targets', () => {
    const streams = { 'channel-4k': 300, 'tcp-4k': 10, 'channel-64k': 300, 'tcp-64k': 20 };
    const summary = summarize([
      boot({ 'c-doorbell': 1, 'node-doorbell': 2, 'channel-spin': 2, 'channel-rtc': 1.2, 'node-tcp': 12 }, streams),
      boot({ 'c-doorbell': 2, 'node-doorbell': 4, 'channel-spin': 6, 'channel-rtc': 2, 'node-tcp': 20 }, streams),
      boot({ 'c-doorbell': 1, 'node-doorbell': 2, 'channel-spin': 2, 'channel-rtc': 1.2, 'node-tcp': 9.6 }, streams),
    ]);
    expect(summary.median.rtt['c-doorbell']).toEqual({ p50: 50, p99: 99, cpuUs: 10 });
    // The median of the boots' ratios, not the ratio of the medians.
    expect(summary.median.ratios['async-over-bare']).toBe(1);
    expect(summary.median.ratios['tcp-over-rtc']).toBe(10);
    const met = Object.fromEntries(summary.targets.map((t) => [t.ratio, t.met]));
    expect(met).toEqual({
      'rtc-over-c': true,
      'rtc-over-c-p99': true,
      'tcp-over-rtc': true,
      'async-over-bare': true,
      'stream-4k': true,
      'stream-64k': false,
    });
  });

  it('reports a workload a boot could not run as not measured, with why', () => {
    const data = boot({ 'c-doorbell': 1, 'node-tcp': 8 }, {});
    data.skipped = { 'channel-rtc': 'this build has no receiveSync' };
    data.profiles = { 'node-tcp': [{ fn: 'write net.js:1', percent: 12.5 }] };
    const summary = summarize([data]);
    expect(summary.targets.find((t) => t.ratio === 'rtc-over-c')).toMatchObject({ met: null });
    const text = formatReport(summary, ['header line']);
    expect(text).toMatch(/^header line\n/);
    expect(text).toContain('| Node channel, run-to-completion (sendSync/receiveSync) | not measured: this build has no receiveSync |');
    expect(text).toContain('| C doorbell ping-pong (VFIO MSI-X eventfd, one word in BAR2) | 50 | 99 | 10 | 50 |');
    expect(text).toContain('| run-to-completion RTT p50 ≤ 1.3× C doorbell | – | not measured |');
    expect(text).toContain('CPU profile of node-tcp');
    expect(text).toContain(' 12.5%  write net.js:1');
  });
});

describe('ivshmem bench --lab flags', () => {
  const fails = async (args: string[]): Promise<string> => {
    const error = await run(process.execPath, [cli, 'bench', ...args]).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(error, `bench ${args.join(' ')} should fail`).not.toBeNull();
    expect(error!.code).toBe(1);
    expect(error!.stderr).not.toMatch(/\n\s+at /);
    return error!.stderr;
  };

  it('refuses lab flags without --lab, host flags with it, and bad numbers, before booting anything', async () => {
    expect(await fails(['--boots', '3'])).toMatch(/--boots goes with --lab/);
    expect(await fails(['--lab', '--sizes', '64'])).toMatch(/--sizes does not apply to --lab/);
    expect(await fails(['--lab', '--boots', '0'])).toMatch(/--boots must be a whole number ≥ 1, got '0'/);
    expect(await fails(['--lab', '--round-trips', 'many'])).toMatch(/--round-trips must be a whole number ≥ 1, got 'many'/);
    expect(await fails(['--lab', 'extra'])).toMatch(/unexpected argument 'extra'/);
  });

  it('refuses to profile what it cannot, before booting', async () => {
    await expect(runLabBench({ profile: ['c-doorbell'] })).rejects.toThrow(/cannot profile 'c-doorbell' \(profilable: node-doorbell, channel-spin/);
    await expect(runLabBench({ boots: 0 })).rejects.toThrow(/boots must be a whole number ≥ 1, got 0/);
  });

  it('documents --lab in its help', async () => {
    const { stdout } = await run(process.execPath, [cli, 'bench', '--help']);
    expect(stdout).toContain('--lab');
    expect(stdout).toMatch(/KVM where it really works, TCG otherwise/);
  });
});

describe('the C floor', () => {
  const floor = compileFloor(scratch);

  it('compiles with the system compiler and names a missing one', () => {
    expect(() => compileFloor(scratch, 'no-such-cc-here')).toThrow(/cannot compile the C floor with no-such-cc-here \(install gcc, or set CC\)/);
  });

  it('runs TCP round trips (here over loopback) and prints every sample', async () => {
    const port = String(20000 + (process.pid % 20000));
    const server = spawn(floor, ['tcp-server', port, '50', '64']);
    const closed = new Promise((resolve) => server.on('close', resolve));
    let serverOut = '';
    server.stdout.on('data', (d) => (serverOut += d));
    await new Promise<void>((resolve) => server.stdout.on('data', () => serverOut.includes('ready') && resolve()));
    const { stdout } = await run(floor, ['tcp-client', '127.0.0.1', port, '50', '64']);
    const result = JSON.parse(stdout) as { kind: string; samples: number[] };
    expect(result.kind).toBe('tcp');
    expect(result.samples).toHaveLength(50);
    expect(result.samples.every((v) => v > 0)).toBe(true);
    await closed;
    expect(serverOut).toContain('{"kind":"tcp-echo","rounds":50}');
  });

  it('fails with a message, not a crash, on a device that is not there', async () => {
    const error = await run(floor, ['doorbell', '0000:00:1f.7', 'ping', '1', '10', '0']).catch((e: { code: number; stderr: string }) => e);
    expect(error).toMatchObject({ code: 1 });
    expect((error as { stderr: string }).stderr).toMatch(/^floor: readlink iommu_group: No such file or directory/);
  });
});
