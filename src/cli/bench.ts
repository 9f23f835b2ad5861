import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fail } from '../errors.js';
import { detectAccel } from '../testing/index.js';
import { flagHelp, intFlag, parseArgs, type FlagSpec } from './args.js';
import { runLabBench } from './lab-bench.js';
import { formatReport } from './lab-bench-report.js';

const specs: FlagSpec[] = [
  { long: 'sizes', value: true, help: 'message sizes in bytes, comma-separated (default 64,1024,4096,65536)' },
  { long: 'ms', value: true, help: 'milliseconds per throughput run (default 500)' },
  { long: 'round-trips', value: true, help: 'round trips per latency run (default 3000; --lab: per Node workload, default 1000)' },
  { long: 'lab', value: false, help: 'between two QEMU guests instead (doorbell and virtio-net; see below)' },
  { long: 'boots', value: true, help: '--lab: fresh boots, figures are medians across them (default 5)' },
  { long: 'rtc-spin', value: true, help: "--lab: µs the run-to-completion path spins before sleeping (default: the channel's)" },
  { long: 'cache-dir', value: true, help: '--lab: the lab image cache (default as ivshmem lab)' },
  { long: 'profile', value: true, help: '--lab: CPU-profile these workloads in the driving guest, comma-separated (e.g. channel-rtc,channel-4k)' },
  { long: 'json', value: false, help: '--lab: print the results as JSON on stdout (the table goes to stderr)' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const benchHelp = `ivshmem bench [options]: channels in shared memory against a Unix socket, TCP loopback and a
worker MessagePort on this machine, in one run, with ratios (the same as npm run bench)

${flagHelp(specs)}

ivshmem bench --lab boots two QEMU guests (KVM where it really works, TCG otherwise; it says
which) per boot, each with an ivshmem-doorbell device (VFIO, MSI-X) on one server and a
virtio-net link between them, and measures in the same boot: a C doorbell ping-pong (compiled
here with $CC or cc), the bare Node doorbell, the channel on each waiting path, the bus, C and
Node TCP round trips and streams over virtio-net, and channel streams. Needs the lab (ivshmem
lab status). Under TCG a boot takes from 20 s to 2 minutes, depending on the host's load.`;

// The benchmark's largest ring holds 1 MiB; a message must fit with its header.
const MAX_SIZE = 1 << 19;

function sizes(text: string): number[] {
  const list = text.split(',').map((s) => s.trim());
  for (const s of list) {
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!(n >= 1 && n <= MAX_SIZE)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: --sizes takes byte counts 1..${MAX_SIZE} separated by commas, got '${s}' in '${text}'`);
    }
  }
  return list.map(Number);
}

/** `ivshmem bench`: runs the package's benchmark script in a child process. */
export async function benchCommand(argv: string[]): Promise<number> {
  const { flags, rest } = parseArgs(argv, specs, 'bench');
  if (flags.help) {
    console.log(benchHelp);
    return 0;
  }
  if (rest.length) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: unexpected argument '${rest[0]}' (see ivshmem bench --help)`);
  const labOnly = ['boots', 'rtc-spin', 'cache-dir', 'json', 'profile'].find((name) => flags[name] !== undefined);
  if (flags.lab) return labBenchCommand(flags);
  if (labOnly) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: --${labOnly} goes with --lab`);
  const script = join(import.meta.dirname, '..', '..', 'bench', 'run.mjs');
  if (!existsSync(script)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: ${script} is missing from this installation`);
  // Checked here, before the benchmark starts its peer processes: a bad value is one line, never
  // a crash of the benchmark that leaves its peers behind.
  const env = { ...process.env };
  if (flags.sizes !== undefined) env.BENCH_SIZES = sizes(String(flags.sizes)).join(',');
  const ms = intFlag(flags, 'ms', 'bench', { min: 1, max: 600_000 });
  if (ms !== undefined) env.BENCH_MS = String(ms);
  const roundTrips = intFlag(flags, 'round-trips', 'bench', { min: 100, max: 10_000_000 });
  if (roundTrips !== undefined) env.BENCH_ROUND_TRIPS = String(roundTrips);
  const child = spawn(process.execPath, [script], { stdio: 'inherit', env });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
}

function wholeNumber(flags: Record<string, string | true>, name: string, min: number): number | undefined {
  const text = flags[name];
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: --${name} must be a whole number ≥ ${min}, got '${String(text)}'`);
  return value;
}

async function labBenchCommand(flags: Record<string, string | true>): Promise<number> {
  for (const name of ['sizes', 'ms']) {
    if (flags[name] !== undefined) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: --${name} does not apply to --lab`);
  }
  const boots = wholeNumber(flags, 'boots', 1);
  const rounds = wholeNumber(flags, 'round-trips', 1);
  const rtcSpin = wholeNumber(flags, 'rtc-spin', 0);
  const cacheDir = typeof flags['cache-dir'] === 'string' ? resolve(flags['cache-dir']) : undefined;
  const accel = detectAccel();
  console.error(`ivshmem bench --lab: ${accel === 'kvm' ? 'KVM' : 'TCG (software emulation: no usable KVM here, so every figure is magnified)'}`);
  const profile = typeof flags.profile === 'string' ? flags.profile.split(',').filter(Boolean) : undefined;
  const result = await runLabBench({ boots, rounds, rtcSpin, cacheDir, accel, profile, onProgress: (line) => console.error(`lab: ${line}`) });
  const header = [
    `ivshmem lab benchmark: ${result.accel.toUpperCase()}, ${result.settings.boots} boots, ${result.machine.cpus} host CPUs (${result.machine.model}), node ${result.machine.node}`,
    `load average before ${result.machine.loadBefore.join(' ')}, after ${result.machine.loadAfter.join(' ')}; boots took ${result.bootSeconds.join(', ')} s${result.retries ? ` (${result.retries} booted again: a guest kernel died before its job)` : ''}`,
    `round trips: ${result.settings.rounds} per Node workload, ${result.settings.floorRounds} per C workload, after ${result.settings.warmup} of warm-up; streams: ${result.settings.tcpStreamBytes / 2 ** 20} MiB over TCP, ${result.settings.channelStreamBytes / 2 ** 20} MiB over channels`,
  ];
  const table = formatReport(result, header);
  if (flags.json) {
    console.error(table);
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(table);
  }
  return 0;
}
