import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LabError } from './errors.js';
import { run } from './exec.js';
import { buildInitramfs, initramfsKey } from './initramfs.js';
import { withLock } from './slots.js';
import { copyModules, extractVmlinux, fetchKernel, kernelPackage, kernelVersion } from './kernel.js';

/** Options of {@link prepareLab}. */
export interface PrepareLabOptions {
  /** Where kernels and initramfs images are kept. Default: `$IVSHMEM_LAB_CACHE`, else `~/.cache/ivshmem-lab`. */
  cacheDir?: string;
  /** The kernel package to fetch. Default: the one `linux-image-amd64` depends on. */
  kernelPackage?: string;
  /** Called with one line per step (download, unpack, …). */
  onProgress?: (message: string) => void;
}

/** A prepared guest image: everything QEMU needs to boot a lab guest. */
export interface LabImage {
  /** Kernel version, e.g. `6.1.0-56-amd64`; also the cache folder's name. */
  version: string;
  /** The cache folder of this version. */
  dir: string;
  /** The uncompressed kernel (ELF), for `-kernel`. */
  kernel: string;
  /** The gzip-compressed initramfs, for `-initrd`. */
  initrd: string;
}

interface ImageInfo {
  version: string;
  package: string;
  preparedAt: string;
}

/** `$IVSHMEM_LAB_CACHE`, else `~/.cache/ivshmem-lab`. */
export function defaultCacheDir(): string {
  return process.env.IVSHMEM_LAB_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ivshmem-lab');
}

/**
 * Makes sure a guest kernel and initramfs are in the cache, fetching Debian's kernel package
 * with `apt-get download` when they are not (about 70 MB, once per kernel version). Needs
 * apt-get, dpkg-deb, busybox (static) and xz or python3 on the host.
 *
 * @example
 * ```ts
 * const image = await prepareLab({ onProgress: console.log });
 * console.log(image.kernel, image.initrd);
 * ```
 */
export async function prepareLab(options: PrepareLabOptions = {}): Promise<LabImage> {
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const progress = options.onProgress ?? (() => {});
  let pkg = options.kernelPackage;
  if (pkg === undefined) {
    try {
      pkg = await kernelPackage();
    } catch (error) {
      // Offline, or apt lists never fetched: a kernel prepared earlier still does.
      const cached = await findLabImage(cacheDir);
      if (!cached) throw error;
      progress(`${(error as Error).message.split('\n')[0]}; using kernel ${cached.version} from the cache`);
      return cached;
    }
  }
  const version = kernelVersion(pkg);
  const dir = join(cacheDir, version);

  await mkdir(cacheDir, { recursive: true });
  await withLock(join(cacheDir, `.${version}.lock`), async () => {
    if (existsSync(join(dir, 'image.json'))) {
      progress(`kernel ${version} already in ${dir}`);
      return;
    }
    const work = join(cacheDir, `.${version}.${process.pid}.tmp`);
    // Work folders of preparations that were killed (we hold the lock: none is in use).
    for (const name of await readdir(cacheDir)) {
      if (name.startsWith(`.${version}.`) && name.endsWith('.tmp')) await rm(join(cacheDir, name), { recursive: true, force: true });
    }
    try {
      const out = join(work, 'image');
      await mkdir(out, { recursive: true });
      progress(`downloading ${pkg} (apt-get download)`);
      await fetchKernel(pkg, work);
      progress(`extracting vmlinux from vmlinuz-${version}`);
      await writeFile(join(out, 'vmlinux'), await extractVmlinux(join(work, 'root', 'boot', `vmlinuz-${version}`)));
      progress('collecting kernel modules (busybox depmod)');
      await copyModules(join(work, 'root'), version, join(out, 'modules'));
      const info: ImageInfo = { version, package: pkg, preparedAt: new Date().toISOString() };
      await writeFile(join(out, 'image.json'), `${JSON.stringify(info, null, 2)}\n`);
      // Atomic publish: a reader never sees a half-prepared version.
      await rm(dir, { recursive: true, force: true });
      await rename(out, dir);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
  return finish(dir, version, progress);
}

/**
 * The most recently prepared image in the cache, without asking apt: what {@link startLab}
 * boots unless told otherwise. Null when nothing was prepared yet.
 */
export async function findLabImage(cacheDir = defaultCacheDir()): Promise<LabImage | null> {
  let best: ImageInfo | null = null;
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    const info = await readFile(join(cacheDir, name, 'image.json'), 'utf8')
      .then((text) => JSON.parse(text) as ImageInfo)
      .catch(() => null);
    if (info && (!best || info.preparedAt > best.preparedAt)) best = info;
  }
  return best && finish(join(cacheDir, best.version), best.version, () => {});
}

// The initramfs is cheap (under a second) and keyed on /init's text, so it is rebuilt whenever
// the lab's /init changes without fetching the kernel again.
async function finish(dir: string, version: string, progress: (message: string) => void): Promise<LabImage> {
  const initrd = join(dir, `initrd-${initramfsKey()}.gz`);
  if (!existsSync(initrd)) {
    progress('building the initramfs');
    const busybox = (await run('sh', ['-c', 'command -v busybox']).catch(() => Buffer.from(''))).toString().trim();
    if (!busybox) throw new LabError('busybox not found: install busybox-static (apt-get install busybox-static)');
    const temp = `${initrd}.${process.pid}.tmp`;
    await writeFile(temp, await buildInitramfs(busybox, join(dir, 'modules')));
    await rename(temp, initrd);
  }
  return { version, dir, kernel: join(dir, 'vmlinux'), initrd };
}
