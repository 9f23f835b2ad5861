// `ivshmem bench --lab`: two lab guests per boot, each with an ivshmem-doorbell device (VFIO,
// MSI-X) on one server and a virtio-net link to the other; every workload measured in the same
// boot, so ratios compare like with like. The guests' side is bench/lab/guest.mjs, the C floor
// bench/lab/floor.c (compiled here with the system compiler; the guests run the host's files).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFailure, LabError, startLab, type Accel } from '../testing/index.js';
import { ROWS, STREAMS, summarize, type BootData, type LabBenchSummary } from './lab-bench-report.js';

/** Options of {@link runLabBench}. */
export interface LabBenchOptions {
  /** Fresh boots (default 5); figures are medians across them. */
  boots?: number;
  /** Round trips per Node workload (default 1000), after `warmup`. */
  rounds?: number;
  /** Round trips per C workload (default 2000). */
  floorRounds?: number;
  /** Round trips before measuring (default 100). */
  warmup?: number;
  /** Bytes per Node TCP stream (default 16 MiB; rounded up to 1 MiB). */
  tcpStreamBytes?: number;
  /** Bytes per channel stream (default 64 MiB; rounded up to 1 MiB). */
  channelStreamBytes?: number;
  /** Spin of the run-to-completion workload in µs (default: the channel's). */
  rtcSpin?: number;
  /** Workloads to CPU-profile in the driving guest (keys of {@link ROWS} and {@link STREAMS}, not the C ones). */
  profile?: string[];
  cacheDir?: string;
  accel?: Accel | 'auto';
  /** The C compiler (default `$CC`, else `cc`). */
  cc?: string;
  onProgress?: (message: string) => void;
}

/** The benchmark's outcome: settings, the machine, each boot's figures and the medians. */
export interface LabBenchResult extends LabBenchSummary {
  accel: Accel;
  settings: Required<Pick<LabBenchOptions, 'boots' | 'rounds' | 'floorRounds' | 'warmup' | 'tcpStreamBytes' | 'channelStreamBytes'>> & { rtcSpin?: number; profile?: string[] };
  machine: { cpus: number; model: string; node: string; kernel: string; loadBefore: number[]; loadAfter: number[] };
  /** Seconds each boot took, boot to power-off of both guests. */
  bootSeconds: number[];
  /** Boots done again because a guest's kernel died before its job started. */
  retries: number;
}

const MiB = 1 << 20;
const MAX_RETRIES = 3;
const roundUp = (n: number): number => Math.max(MiB, Math.ceil(n / MiB) * MiB);
const here = import.meta.dirname;

/** Where bench/lab is: next to dist/ in the package. */
export function labBenchDir(): string {
  return join(here, '..', '..', 'bench', 'lab');
}

/** Compiles the C floor into `dir`; returns the binary's path. */
export function compileFloor(dir: string, cc = process.env.CC || 'cc'): string {
  const source = join(labBenchDir(), 'floor.c');
  if (!existsSync(source)) throw new LabError(`ivshmem bench --lab: ${source} is missing from this installation`);
  const binary = join(dir, 'floor');
  const out = spawnSync(cc, ['-O2', '-Wall', '-o', binary, source], { encoding: 'utf8' });
  if (out.error || out.status !== 0) {
    throw new LabError(`ivshmem bench --lab: cannot compile the C floor with ${cc} (install gcc, or set CC): ${out.error?.message ?? out.stderr.trim()}`);
  }
  return binary;
}

/** Runs the lab benchmark: `boots` fresh pairs of guests, each running every workload once. */
export async function runLabBench(options: LabBenchOptions = {}): Promise<LabBenchResult> {
  const settings = {
    boots: options.boots ?? 5,
    rounds: options.rounds ?? 1000,
    floorRounds: options.floorRounds ?? 2000,
    warmup: options.warmup ?? 100,
    tcpStreamBytes: roundUp(options.tcpStreamBytes ?? 16 * MiB),
    channelStreamBytes: roundUp(options.channelStreamBytes ?? 64 * MiB),
    ...(options.rtcSpin === undefined ? {} : { rtcSpin: options.rtcSpin }),
    ...(options.profile?.length ? { profile: options.profile } : {}),
  };
  // Node workloads, profiled in the driving guest (the sender, for streams).
  const profilable = [...ROWS, ...STREAMS].map((r) => r.key).filter((key) => !key.startsWith('c-'));
  const unknown = settings.profile?.find((row) => !profilable.includes(row));
  if (unknown !== undefined) throw new LabError(`ivshmem bench --lab: cannot profile '${unknown}' (profilable: ${profilable.join(', ')})`);
  for (const key of ['boots', 'rounds', 'floorRounds', 'warmup'] as const) {
    const value = settings[key];
    if (!Number.isSafeInteger(value) || value < (key === 'warmup' ? 0 : 1)) {
      throw new LabError(`ivshmem bench --lab: ${key} must be a whole number ≥ ${key === 'warmup' ? 0 : 1}, got ${String(value)}`);
    }
  }
  if (settings.rtcSpin !== undefined && !(settings.rtcSpin >= 0)) throw new LabError(`ivshmem bench --lab: rtc spin must be ≥ 0 µs, got ${settings.rtcSpin}`);
  const progress = options.onProgress ?? (() => {});
  const script = join(labBenchDir(), 'guest.mjs');
  if (!existsSync(script)) throw new LabError(`ivshmem bench --lab: ${script} is missing from this installation`);
  const work = mkdtempSync(join(tmpdir(), 'ivshmem-lab-bench-'));
  const loadBefore = loadavg();
  const boots: BootData[] = [];
  const bootSeconds: number[] = [];
  let accel: Accel = 'tcg';
  let retries = 0;
  try {
    const floor = compileFloor(work, options.cc);
    for (let boot = 1; boot <= settings.boots; boot++) {
      // A fresh lab per boot: a new server and new shared memory, nothing left from the last.
      const lab = await startLab({
        cacheDir: options.cacheDir,
        accel: options.accel,
        servers: { default: { size: 16 * MiB, vectors: 2 } },
        guests: [
          { name: 'b', devices: [{ kind: 'doorbell' }], net: { address: '10.0.0.2/24' } },
          { name: 'a', devices: [{ kind: 'doorbell' }], net: { address: '10.0.0.1/24' } },
        ],
        timeoutMs: 900_000,
        onProgress: (line) => progress(`boot ${boot}/${settings.boots}: ${line}`),
      });
      try {
        accel = lab.accel;
        const started = Date.now();
        const args = (role: string): string[] => [role, floor, JSON.stringify(settings)];
        const results = await lab.run({ b: { script, args: args('b') }, a: { script, args: args('a') } });
        const failed = Object.values(results).filter((r) => r.exitCode !== 0);
        // A guest that never reached its job (its kernel died booting on a starved host) says
        // nothing about the workloads: boot again, a bounded number of times.
        const unbooted = failed.filter((r) => !r.started);
        if (failed.length && unbooted.length === failed.length && retries < MAX_RETRIES) {
          retries++;
          progress(`boot ${boot}/${settings.boots}: guest ${unbooted.map((r) => r.name).join(', ')} never started its job; booting again (${retries} of ${MAX_RETRIES} retries)`);
          boot--;
          continue;
        }
        if (failed.length) throw new LabError(`ivshmem bench --lab: boot ${boot} failed\n${failed.map(describeFailure).join('\n')}`);
        const data = JSON.parse(results.a!.stdout.trim().split('\n').pop() ?? '') as BootData;
        boots.push(data);
        bootSeconds.push(Math.round((Date.now() - started) / 1000));
        progress(`boot ${boot}/${settings.boots}: done in ${bootSeconds.at(-1)} s`);
      } finally {
        await lab.close();
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const cpuList = cpus();
  return {
    accel,
    settings,
    machine: {
      cpus: cpuList.length,
      model: cpuList[0]?.model ?? 'unknown',
      node: process.version,
      kernel: spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim(),
      loadBefore: loadBefore.map((l) => Math.round(l * 100) / 100),
      loadAfter: loadavg().map((l) => Math.round(l * 100) / 100),
    },
    bootSeconds,
    retries,
    ...summarize(boots),
  };
}
