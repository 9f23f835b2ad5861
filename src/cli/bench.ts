import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors.js';
import { flagHelp, parseArgs, type FlagSpec } from './args.js';

const specs: FlagSpec[] = [
  { long: 'sizes', value: true, help: 'message sizes in bytes, comma-separated (default 64,1024,4096,65536)' },
  { long: 'ms', value: true, help: 'milliseconds per throughput run (default 500)' },
  { long: 'round-trips', value: true, help: 'round trips per latency run (default 3000)' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const benchHelp = `ivshmem bench [options]: channels in shared memory against a Unix socket, TCP loopback and a
worker MessagePort on this machine, in one run, with ratios (the same as npm run bench)

${flagHelp(specs)}`;

/** `ivshmem bench`: runs the package's benchmark script in a child process. */
export async function benchCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, specs, 'bench');
  if (flags.help) {
    console.log(benchHelp);
    return 0;
  }
  const script = join(import.meta.dirname, '..', '..', 'bench', 'run.mjs');
  if (!existsSync(script)) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem bench: ${script} is missing from this installation`);
  const env = { ...process.env };
  if (flags.sizes) env.BENCH_SIZES = String(flags.sizes);
  if (flags.ms) env.BENCH_MS = String(flags.ms);
  if (flags['round-trips']) env.BENCH_ROUND_TRIPS = String(flags['round-trips']);
  const child = spawn(process.execPath, [script], { stdio: 'inherit', env });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
}
