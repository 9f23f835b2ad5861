import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { LabError } from './errors.js';
import { run } from './exec.js';
import { buildInitramfs, initramfsKey } from './initramfs.js';
import { withLock } from './slots.js';
import { copyModules, extractVmlinux, fetchKernel, kernelPackage, kernelVersion, modulesKey } from './kernel.js';

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
  /**
   * The kernel modules the image holds (sorted); empty for an image prepared before the lab
   * recorded them. An image without every module of the lab's sets is brought up to date by
   * {@link prepareLab}.
   */
  modules: string[];
}

interface ImageInfo {
  version: string;
  package: string;
  preparedAt: string;
  /** {@link modulesKey} of the modules copied; absent in older images. */
  modules?: string;
}

/** True when the image holds every module the lab's initramfs loads. */
export function imageIsCurrent(image: LabImage): boolean {
  return modulesKey(image.modules) === modulesKey();
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
    const known = await readInfo(dir);
    if (known?.modules === modulesKey()) {
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
      progress(`downloading ${pkg} (apt-get download)${known ? ' again: the cached image lacks modules the lab now loads' : ''}`);
      await fetchKernel(pkg, work);
      if (!known) {
        progress(`extracting vmlinux from vmlinuz-${version}`);
        await writeFile(join(out, 'vmlinux'), await extractVmlinux(join(work, 'root', 'boot', `vmlinuz-${version}`)));
      }
      progress('collecting kernel modules (busybox depmod)');
      await copyModules(join(work, 'root'), version, join(out, 'modules'));
      const info: ImageInfo = { version, package: pkg, preparedAt: new Date().toISOString(), modules: modulesKey() };
      await writeFile(join(out, 'image.json'), `${JSON.stringify(info, null, 2)}\n`);
      if (known) {
        // An image from before a module set was added: swap in the new modules and leave the
        // kernel and the folder in place, since other labs may be booting from them now.
        await rename(join(dir, 'modules'), join(work, 'old-modules'));
        await rename(join(out, 'modules'), join(dir, 'modules'));
        await rename(join(out, 'image.json'), join(dir, 'image.json'));
      } else {
        // Atomic publish: a reader never sees a half-prepared version.
        await rm(dir, { recursive: true, force: true });
        await rename(out, dir);
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
  const info = await readInfo(dir);
  if (!info) throw new LabError(`the lab image in ${dir} has no readable image.json after preparation`);
  return finish(dir, info, progress);
}

/**
 * The most recently prepared image in the cache, without asking apt: what {@link startLab}
 * boots unless told otherwise. Null when nothing was prepared yet.
 */
export async function findLabImage(cacheDir = defaultCacheDir()): Promise<LabImage | null> {
  let best: ImageInfo | null = null;
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    const info = await readInfo(join(cacheDir, name));
    if (info && (!best || info.preparedAt > best.preparedAt)) best = info;
  }
  return best && finish(join(cacheDir, best.version), best, () => {});
}

async function readInfo(dir: string): Promise<ImageInfo | null> {
  return readFile(join(dir, 'image.json'), 'utf8')
    .then((text) => JSON.parse(text) as ImageInfo)
    .catch(() => null);
}

// The initramfs is cheap (under a second) and keyed on /init's text, so it is rebuilt whenever
// the lab's /init changes without fetching the kernel again.
async function finish(dir: string, info: ImageInfo, progress: (message: string) => void): Promise<LabImage> {
  const initrd = join(dir, `initrd-${initramfsKey(info.modules)}.gz`);
  if (!existsSync(initrd)) {
    progress('building the initramfs');
    const busybox = (await run('sh', ['-c', 'command -v busybox']).catch(() => Buffer.from(''))).toString().trim();
    if (!busybox) throw new LabError('busybox not found: install busybox-static (apt-get install busybox-static)');
    const temp = `${initrd}.${process.pid}.tmp`;
    await writeFile(temp, await buildInitramfs(busybox, join(dir, 'modules')));
    await rename(temp, initrd);
  }
  const modules = info.modules ? info.modules.split(',') : [];
  return { version: info.version, dir, kernel: join(dir, 'vmlinux'), initrd, modules };
}
