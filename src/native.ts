// Loads the addon: $IVSHMEM_ADDON if set; else a local build first, then
// prebuilds/<platform>-<arch>/. On failure the error names each package manager's fix and lists
// every path tried and why each failed.
import { constants, existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail, IvshmemError, type ErrnoCode } from './errors.js';

/** The addon's primitives. Internal: the public API wraps them. */
export interface Native {
  setErrorClass(cls: typeof IvshmemError): void;

  open(path: string, flags: number, mode?: number): number;
  close(fd: number, path?: string): void;
  fstat(fd: number, path?: string): { size: number; mode: number; dev: number; ino: number };
  ftruncate(fd: number, size: number, path?: string): void;
  memfdCreate(name?: string): number;
  setNonBlocking(fd: number, path?: string): void;
  tryLock(fd: number, path?: string): boolean;

  map(fd: number, offset: number, length: number, writable: boolean, path?: string): ArrayBuffer;
  unmap(buffer: ArrayBuffer): void;
  readonly pageSize: number;

  read32(registers: ArrayBuffer, offset: number): number;
  write32(registers: ArrayBuffer, offset: number, value: number): void;

  eventfdCreate(initial?: number): number;
  eventfdSignal(fd: number, value?: number, path?: string): boolean;
  eventfdDrain(fd: number, path?: string): number;

  Watcher: new (fd: number, callback: (error: ErrnoCode | null, events: number) => void) => NativeWatcher;
  readonly READABLE: number;
  readonly WRITABLE: number;
  readonly DISCONNECT: number;

  /**
   * Blocks this thread until the u32 at `byteOffset` in `buffer` differs from `expected`
   * (spinning on it for `spinNs` first, at most 1 s), `fd` becomes readable, or `timeoutNs` passes (-1:
   * never; needs an fd). `fd` -1: no fd, the wait after the spin is a sleep. Returns a mask of
   * WAIT_WORD and WAIT_READABLE, 0 on timeout. The fd is not read.
   */
  waitWord(buffer: ArrayBuffer, byteOffset: number, expected: number, fd: number, spinNs: number, timeoutNs: number): number;
  readonly WAIT_WORD: number;
  readonly WAIT_READABLE: number;

  /** `mode`: the socket file's exact permission bits, whatever the umask (default: left to the umask). */
  socketListen(path: string, backlog?: number, mode?: number): number;
  socketAccept(fd: number, path?: string): number;
  socketConnect(path: string): number;
  socketSend(fd: number, data: Uint8Array, fdToSend?: number, path?: string): number;
  socketReceive(fd: number, data: Uint8Array, path?: string): { bytes: number; fds: number[]; truncated: boolean } | null;
  socketShutdown(fd: number): void;

  vfioGetApiVersion(containerFd: number, path?: string): number;
  vfioCheckExtension(containerFd: number, extension: number, path?: string): number;
  vfioGroupGetStatus(groupFd: number, path?: string): { viable: boolean; containerSet: boolean };
  vfioGroupSetContainer(groupFd: number, containerFd: number, path?: string): void;
  vfioSetIommu(containerFd: number, type: number, path?: string): void;
  vfioGroupGetDeviceFd(groupFd: number, deviceName: string, path?: string): number;
  vfioDeviceGetInfo(deviceFd: number, path?: string): { flags: number; numRegions: number; numIrqs: number };
  vfioDeviceGetRegionInfo(deviceFd: number, index: number, path?: string): { index: number; flags: number; size: number; offset: number };
  vfioDeviceGetIrqInfo(deviceFd: number, index: number, path?: string): { index: number; flags: number; count: number };
  /** One eventfd per vector from `start`; an empty array disables every vector of `index`. */
  vfioDeviceSetIrqs(deviceFd: number, index: number, start: number, eventfds: number[], path?: string): void;
  pread(fd: number, data: Uint8Array, offset: number, path?: string): number;
  pwrite(fd: number, data: Uint8Array, offset: number, path?: string): number;
  readonly vfio: NativeVfioConstants;

  /** A new, empty memfd created with MFD_ALLOW_SEALING. */
  memfdCreateSealable(name?: string): number;
  /** fcntl(F_ADD_SEALS). */
  addSeals(fd: number, seals: number, path?: string): void;
  /** fcntl(F_GET_SEALS); throws EINVAL for a file that cannot carry seals. */
  getSeals(fd: number, path?: string): number;
  fchmod(fd: number, mode: number, path?: string): void;
  /** F_SEAL_* bits. */
  readonly seals: { readonly SEAL: number; readonly SHRINK: number; readonly GROW: number; readonly WRITE: number };
}

/** Constants from <linux/vfio.h>. */
export interface NativeVfioConstants {
  readonly API_VERSION: number;
  readonly TYPE1_IOMMU: number;
  readonly TYPE1v2_IOMMU: number;
  readonly NOIOMMU_IOMMU: number;
  readonly PCI_BAR0_REGION_INDEX: number;
  readonly PCI_BAR1_REGION_INDEX: number;
  readonly PCI_BAR2_REGION_INDEX: number;
  readonly PCI_CONFIG_REGION_INDEX: number;
  readonly PCI_INTX_IRQ_INDEX: number;
  readonly PCI_MSI_IRQ_INDEX: number;
  readonly PCI_MSIX_IRQ_INDEX: number;
  readonly REGION_INFO_FLAG_READ: number;
  readonly REGION_INFO_FLAG_WRITE: number;
  readonly REGION_INFO_FLAG_MMAP: number;
  readonly IRQ_INFO_EVENTFD: number;
  readonly DEVICE_FLAGS_PCI: number;
}

export interface NativeWatcher {
  start(events?: number): void;
  stop(): void;
  ref(): void;
  unref(): void;
  close(): void;
}

const root = join(fileURLToPath(import.meta.url), '..', '..');

/** Where the addon may be, in node-gyp-build's order: a local build wins over a prebuild. */
function candidates(): string[] {
  // An explicit build (the sanitizer variant in the tests, a debug build): that one or nothing,
  // so a mistyped path fails instead of silently loading another addon.
  const explicit = process.env.IVSHMEM_ADDON;
  if (explicit) return [explicit];
  const paths = [join(root, 'build', 'Release', 'ivshmem.node'), join(root, 'build', 'Debug', 'ivshmem.node')];
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) if (name.endsWith('.node')) paths.push(join(dir, name));
  }
  return paths;
}

/** What to run to build the addon, for each package manager (some block install scripts). */
const fixes = [
  'npm:  npm rebuild ivshmem',
  'pnpm: pnpm approve-builds (or add "ivshmem" to pnpm.onlyBuiltDependencies in package.json), then pnpm rebuild ivshmem',
  'yarn: yarn rebuild ivshmem (Yarn 2+; with enableScripts: false, set dependenciesMeta["ivshmem"].built to true); Yarn 1: npm rebuild ivshmem',
];

function load(): { addon: Native; path: string } {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const path of candidates()) {
    if (!existsSync(path)) {
      tried.push(`  ${path}: not found`);
      continue;
    }
    try {
      const addon = require(path) as Native;
      addon.setErrorClass(IvshmemError);
      return { addon, path };
    } catch (error) {
      tried.push(`  ${path}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  fail(
    'ERR_IVSHMEM_NATIVE',
    `The ivshmem native addon could not be loaded: no prebuild fits ${process.platform}-${process.arch} and there is no local build. ` +
      `Build it (needs python3, make and g++) with your package manager:\n${fixes.map((f) => `  ${f}`).join('\n')}\nTried:\n${tried.join('\n')}`,
  );
}

let loaded: { addon: Native; path: string } | undefined;
let failure: unknown;

/** Loads the addon on first use (once per environment: main thread or worker); rethrows a failure. */
function addon(): { addon: Native; path: string } {
  if (loaded) return loaded;
  if (failure) throw failure;
  try {
    loaded = load();
    // ES module bindings are live: every importer calls the addon directly from now on, no
    // Proxy trap on the hot path (waitWord, eventfdDrain under run-to-completion).
    native = loaded.addon;
    return loaded;
  } catch (error) {
    throw (failure = error);
  }
}

/**
 * The addon, loaded on first use: importing the package never needs it, so `--help`, codecs and
 * ring arithmetic work where it cannot load. Until then a Proxy that loads it; after, the
 * addon object itself (keep no copy of the binding: read `native` at each use).
 */
export let native: Native = new Proxy({} as Native, {
  get: (_target, key) => Reflect.get(addon().addon, key),
  has: (_target, key) => Reflect.has(addon().addon, key),
  // `{ ...native, open: … }` (tests wrap single calls) copies the addon's own members.
  ownKeys: () => Reflect.ownKeys(addon().addon),
  getOwnPropertyDescriptor: (_target, key) => {
    const descriptor = Reflect.getOwnPropertyDescriptor(addon().addon, key);
    // The target has no such member: the proxy may only report it as configurable.
    return descriptor && { ...descriptor, configurable: true };
  },
});

/** The file the addon was loaded from (loading it if needed). */
export function nativePath(): string {
  return addon().path;
}

/**
 * Takes an flock(2) lock on the file at `path` (created if missing, mode 0666) if nobody holds
 * it; returns its release, or null when it is held. The kernel drops the lock when its holder
 * dies, so a lock is never left behind. The one way the library (the lab) locks host-wide.
 */
export function tryLockFile(path: string): (() => void) | null {
  const fd = native.open(path, constants.O_RDWR | constants.O_CREAT, 0o666);
  let taken = false;
  try {
    taken = native.tryLock(fd, path);
  } finally {
    if (!taken) native.close(fd);
  }
  if (!taken) return null;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    native.close(fd);
  };
}
