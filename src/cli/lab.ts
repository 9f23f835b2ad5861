// `ivshmem lab …`: prepare the guest image, see what is there, run a script in guests, clean up.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  defaultCacheDir,
  describeFailure,
  detectAccel,
  findLabImage,
  LabError,
  prepareLab,
  startLab,
  sweepLeftovers,
  type LabDeviceConfig,
} from '../testing/index.js';
import { flagHelp, parseArgs, parseSize, type FlagSpec } from './args.js';

const specs: FlagSpec[] = [
  { long: 'cache-dir', value: true, help: 'kernel and initramfs cache (default $IVSHMEM_LAB_CACHE or ~/.cache/ivshmem-lab)' },
  { long: 'kernel-package', value: true, help: 'prepare: the Debian kernel package (default: what linux-image-amd64 depends on)' },
  { long: 'guests', value: true, help: 'run: how many guests (default 1)' },
  { long: 'doorbell', value: true, help: 'run: give each guest an ivshmem-doorbell device with this many vectors' },
  { long: 'plain', value: true, help: 'run: give each guest an ivshmem-plain device of this size (K/M/G), shared by all' },
  { long: 'size', value: true, help: 'run: doorbell shared memory size (default 4M)' },
  { long: 'no-iommu', value: false, help: 'run: no vIOMMU (VFIO will not work, boots a little faster)' },
  { long: 'timeout', value: true, help: 'run: seconds before a guest is killed (default 180)' },
  { long: 'cache', value: false, help: 'clean: also delete the kernel cache' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const labHelp = `ivshmem lab <prepare|status|run|clean> [options]: QEMU guests with ivshmem devices

  prepare                 fetch Debian's kernel (apt-get download), build vmlinux and the initramfs
  status                  show the cached image, the accelerator, and missing tools
  run [opts] SCRIPT ARGS  boot guests that each run \`node SCRIPT ARGS\` (the host's / is the guest's)
  clean                   remove what killed labs left behind (folders, /dev/shm files)

${flagHelp(specs)}`;

/** `ivshmem lab`: returns the exit status. */
export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { flags, rest: positional } = parseArgs(rest, specs, 'lab');
  if (!sub || flags.help || sub === '--help' || sub === '-h') {
    console.log(labHelp);
    return sub ? 0 : 1;
  }
  const cacheDir = typeof flags['cache-dir'] === 'string' ? resolve(flags['cache-dir']) : defaultCacheDir();
  switch (sub) {
    case 'prepare': {
      const image = await prepareLab({
        cacheDir,
        kernelPackage: flags['kernel-package'] as string | undefined,
        onProgress: (line) => console.log(`lab: ${line}`),
      });
      console.log(`lab: ready: kernel ${image.version}\n  ${image.kernel}\n  ${image.initrd}`);
      return 0;
    }
    case 'status':
      return status(cacheDir);
    case 'run':
      return run(positional, flags, cacheDir);
    case 'clean':
      sweepLeftovers();
      if (flags.cache) rmSync(cacheDir, { recursive: true, force: true });
      console.log(`lab: cleaned${flags.cache ? ` (and removed ${cacheDir})` : ''}`);
      return 0;
    default:
      console.error(`ivshmem lab: unknown subcommand '${sub}'\n\n${labHelp}`);
      return 1;
  }
}

async function status(cacheDir: string): Promise<number> {
  const image = await findLabImage(cacheDir);
  const tools = ['qemu-system-x86_64', 'busybox', 'apt-get', 'dpkg-deb'].map((tool) => ({
    tool,
    found: spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0,
  }));
  console.log(`${'cache:'.padEnd(20)}${cacheDir}`);
  console.log(`${'image:'.padEnd(20)}${image ? `${image.version} (${image.kernel})` : 'none: run `ivshmem lab prepare`'}`);
  console.log(`${'accelerator:'.padEnd(20)}${detectAccel()}`);
  for (const { tool, found } of tools) console.log(`${`${tool}:`.padEnd(20)}${found ? 'found' : 'MISSING'}`);
  return image && tools.every((t) => t.found) ? 0 : 1;
}

async function run(positional: string[], flags: Record<string, string | true>, cacheDir: string): Promise<number> {
  const [script, ...args] = positional;
  if (!script) throw new LabError('ivshmem lab run: give the script to run in the guests');
  // Guests see the host's files at the same paths: a script missing here is missing there too.
  if (!existsSync(resolve(script))) throw new LabError(`ivshmem lab run: no script at ${resolve(script)}`);
  const count = flags.guests === undefined ? 1 : Number(flags.guests);
  if (!Number.isInteger(count) || count < 1 || count > 16) throw new LabError('ivshmem lab run: --guests must be 1..16');
  const devices: LabDeviceConfig[] = [];
  if (flags.doorbell !== undefined) devices.push({ kind: 'doorbell', vectors: Number(flags.doorbell) });
  if (typeof flags.plain === 'string') devices.push({ kind: 'plain', size: parseSize(flags.plain) });
  const vectors = flags.doorbell === undefined ? undefined : Number(flags.doorbell);
  const lab = await startLab({
    cacheDir,
    servers: vectors === undefined ? {} : { default: { vectors, size: typeof flags.size === 'string' ? parseSize(flags.size) : undefined } },
    guests: Array.from({ length: count }, (_, i) => ({ name: `guest${i}`, devices, iommu: !flags['no-iommu'] && vectors !== undefined })),
    timeoutMs: flags.timeout === undefined ? undefined : Number(flags.timeout) * 1000,
    onProgress: (line) => console.error(`lab: ${line}`),
  });
  try {
    const jobs = Object.fromEntries(lab.guests.map((g) => [g.name, { script: resolve(script), args }]));
    const results = await lab.run(jobs);
    let worst = 0;
    for (const result of Object.values(results)) {
      for (const line of result.stdout.trimEnd().split('\n').filter(Boolean)) console.log(`${result.name}: ${line}`);
      for (const line of result.stderr.trimEnd().split('\n').filter(Boolean)) console.error(`${result.name}! ${line}`);
      if (result.exitCode !== 0) {
        console.error(describeFailure(result));
        worst = Math.max(worst, result.exitCode ?? 1);
      }
    }
    return worst;
  } finally {
    await lab.close();
  }
}
