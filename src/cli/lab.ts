// `ivshmem lab …`: prepare the guest image, see what is there, run a script in guests, clean up.
import { accessSync, constants, existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
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
import { flagHelp, intFlag, parseArgs, parseSize, type FlagSpec } from './args.js';
import { progress } from './progress.js';

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
  { long: 'json', value: false, help: 'status: print JSON for scripts' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const labHelp = `ivshmem lab <prepare|status|run|clean> [options]: QEMU guests with ivshmem devices

  prepare                 fetch Debian's kernel (apt-get download), build vmlinux and the initramfs
  status [--json]         show the cached image, the accelerator, and missing tools
  run [opts] SCRIPT ARGS  boot guests that each run \`node SCRIPT ARGS\` (the host's / is the guest's);
                          flags for the script go after --: run script.mjs -- --verbose
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
      await checkTools(cacheDir, []);
      const report = progress('lab');
      const image = await prepareLab({ cacheDir, kernelPackage: flags['kernel-package'] as string | undefined, onProgress: report.step }).finally(() => report.done());
      console.log(`lab: ready: kernel ${image.version}\n  ${image.kernel}\n  ${image.initrd}`);
      return 0;
    }
    case 'status':
      return status(cacheDir, flags.json === true);
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

/** The tools the lab runs, with the Debian package of each; `prepare` ones only build the image. */
const TOOLS = [
  { tool: 'qemu-system-x86_64', debian: 'qemu-system-x86', for: 'run' },
  { tool: 'busybox', debian: 'busybox-static', for: 'prepare' },
  { tool: 'apt-get', debian: 'apt', for: 'prepare' },
  { tool: 'dpkg-deb', debian: 'dpkg', for: 'prepare' },
] as const;

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    if (!dir) return false;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Before any download or boot: every tool the work needs is there, or one error naming the
 * Debian packages to install. Preparing needs busybox always (the initramfs) and apt-get and
 * dpkg-deb while no kernel is cached.
 */
async function checkTools(cacheDir: string, also: Array<'run'>): Promise<void> {
  const cached = (await findLabImage(cacheDir)) !== null;
  const needed = TOOLS.filter((t) => (t.for === 'run' ? also.includes('run') : t.tool === 'busybox' || !cached));
  const missing = needed.filter((t) => !onPath(t.tool));
  if (missing.length) {
    throw new LabError(
      `ivshmem lab: missing ${missing.map((t) => t.tool).join(', ')}: install ${missing.map((t) => t.debian).join(' ')} (apt-get install ${missing.map((t) => t.debian).join(' ')})`,
    );
  }
}

async function status(cacheDir: string, json: boolean): Promise<number> {
  const image = await findLabImage(cacheDir);
  const tools = TOOLS.map((t) => ({ tool: t.tool, package: t.debian, found: onPath(t.tool) }));
  const ready = image !== null && tools.every((t) => t.found);
  if (json) {
    console.log(JSON.stringify({ cacheDir, image, accelerator: detectAccel(), tools, ready }, null, 2));
    return ready ? 0 : 2;
  }
  console.log(`${'cache:'.padEnd(20)}${cacheDir}`);
  console.log(`${'image:'.padEnd(20)}${image ? `${image.version} (${image.kernel})` : 'none: run `ivshmem lab prepare`'}`);
  console.log(`${'accelerator:'.padEnd(20)}${detectAccel()}`);
  for (const { tool, package: pkg, found } of tools) console.log(`${`${tool}:`.padEnd(20)}${found ? 'found' : `MISSING (Debian package ${pkg})`}`);
  return ready ? 0 : 2;
}

async function run(positional: string[], flags: Record<string, string | true>, cacheDir: string): Promise<number> {
  const [script, ...args] = positional;
  if (!script) throw new LabError('ivshmem lab run: give the script to run in the guests');
  // Guests see the host's files at the same paths: a script missing here is missing there too.
  if (!existsSync(resolve(script))) throw new LabError(`ivshmem lab run: no script at ${resolve(script)}`);
  const count = intFlag(flags, 'guests', 'lab run', { min: 1, max: 16, fallback: 1 })!;
  const vectors = intFlag(flags, 'doorbell', 'lab run', { min: 1, max: 64 });
  const timeout = intFlag(flags, 'timeout', 'lab run', { min: 1, max: 86_400 });
  const devices: LabDeviceConfig[] = [];
  if (vectors !== undefined) devices.push({ kind: 'doorbell', vectors });
  if (typeof flags.plain === 'string') devices.push({ kind: 'plain', size: parseSize(flags.plain) });
  await checkTools(cacheDir, ['run']);
  const report = progress('lab');
  const lab = await startLab({
    cacheDir,
    servers: vectors === undefined ? {} : { default: { vectors, size: typeof flags.size === 'string' ? parseSize(flags.size) : undefined } },
    guests: Array.from({ length: count }, (_, i) => ({ name: `guest${i}`, devices, iommu: !flags['no-iommu'] && vectors !== undefined })),
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
    onProgress: report.step,
  }).catch((error: unknown) => {
    report.done();
    throw error;
  });
  try {
    const jobs = Object.fromEntries(lab.guests.map((g) => [g.name, { script: resolve(script), args }]));
    report.step(`running ${script} in ${count === 1 ? 'the guest' : `${count} guests`}`);
    const results = await lab.run(jobs).finally(() => report.done());
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
