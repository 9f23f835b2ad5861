import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IvshmemServer } from '../server/index.js';
import { detectAccel, type Accel } from './accel.js';
import { onCleanup } from './cleanup.js';
import { LabError } from './errors.js';
import { deviceAddress, Guest, publishDevices, type BootSpec, type GuestDevice, type GuestJob, type GuestNet, type GuestResult } from './guest.js';
import { checkNetAddress, detectNetBackend, freePort, guestMac, netListening, type NetBackend } from './net.js';
import { findLabImage, imageIsCurrent, prepareLab, type LabImage } from './prepare.js';
import { DIR_PREFIX, shmName, sweepLeftovers } from './leftovers.js';
import { acquireSlots } from './slots.js';

/** A server the lab starts: one ivshmem-server for a set of doorbell devices. */
export interface LabServerConfig {
  /** Shared-memory size (a power of two). Default 4 MiB. */
  size?: number;
  /** Vectors per peer. Default: the most any of its devices asks for, else 1. */
  vectors?: number;
}

/** An ivshmem device of a lab guest. */
export type LabDeviceConfig =
  | {
      /** An `ivshmem-doorbell` device on one of the lab's servers. */
      kind: 'doorbell';
      /** The lab server it connects to (default `default`). */
      server?: string;
      /** The device's `vectors=`: at least the server's. Default: the server's. */
      vectors?: number;
    }
  | {
      /** An `ivshmem-plain` device: shared memory, no doorbells. */
      kind: 'plain';
      /** Devices naming the same `shm` share one backing file (default `default`). */
      shm?: string;
      /** Size in bytes, a power of two. Default 4 MiB. */
      size?: number;
    };

/** A guest's end of a virtio-net link to another guest (see {@link LabGuestConfig.net}). */
export interface LabNetConfig {
  /** Guests naming the same link (default `default`) are wired together; two at most. */
  link?: string;
  /** The guest's IPv4 address and prefix on its eth0, e.g. `10.0.0.1/24`. */
  address: string;
}

/** One guest machine of the lab. */
export interface LabGuestConfig {
  /** Default: `guest0`, `guest1`, … */
  name?: string;
  /** Its ivshmem devices, in PCI order (default none). */
  devices?: LabDeviceConfig[];
  /**
   * An emulated Intel IOMMU, which VFIO (and so interrupts) needs. Default: on when the guest
   * has a doorbell device. Costs some boot time.
   */
  iommu?: boolean;
  /** Guest RAM in MiB. Default 512 (node needs it). */
  memoryMb?: number;
  /**
   * A point-to-point virtio-net link (eth0, configured before the job starts) to the other
   * guest naming the same link. Of the two, the one that boots first in a {@link Lab.run}
   * listens and the other connects, so both must be in the same run for the link to carry
   * anything. QEMU carries the frames between its two processes over a host socket.
   */
  net?: LabNetConfig;
}

/** Options of {@link startLab}. */
export interface LabOptions {
  /** The guests this lab can boot. */
  guests: LabGuestConfig[];
  /** Servers by name; those only named by devices get defaults. */
  servers?: Record<string, LabServerConfig>;
  /** The kernel and initramfs. Default: the newest in `cacheDir`, prepared if there is none. */
  image?: LabImage;
  /** Where the prepared kernel and initramfs are (default {@link defaultCacheDir}). */
  cacheDir?: string;
  /** Run {@link prepareLab} when the cache is empty (default true). */
  prepare?: boolean;
  /** Default: KVM only where it really works (see {@link detectAccel}), else TCG. */
  accel?: Accel | 'auto';
  /** Guests running at once on this host, across processes. Default 2. */
  maxGuests?: number;
  /** How QEMU carries network links. Default: `stream` where QEMU has it, else `socket`. */
  netBackend?: NetBackend | 'auto';
  /** Per job, unless the job says otherwise. Default 180 s. */
  timeoutMs?: number;
  /** Progress of preparation and boots. */
  onProgress?: (message: string) => void;
}

const DEFAULT_SIZE = 4 << 20;
const isPowerOfTwo = (n: number): boolean => Number.isSafeInteger(n) && n >= 4096 && (n & (n - 1)) === 0;

/** A lab guest with its defaults filled in. */
export interface LabGuest {
  /** The guest's name. */
  name: string;
  /** Its ivshmem devices, in PCI order. */
  devices: LabDeviceConfig[];
  /** Whether it boots with a vIOMMU (needed for VFIO). */
  iommu: boolean;
  /** Guest memory in MiB. */
  memoryMb: number;
  /** Its virtio-net link: the link's name, its address on eth0 and its MAC address. */
  net?: {
    /** The link's name. */
    link: string;
    /** The guest's address on eth0, e.g. `10.0.0.1/24`. */
    address: string;
    /** The virtio-net device's MAC address. */
    mac: string;
  };
}

/**
 * QEMU guests with ivshmem devices, for tests: servers and shared memory on the host, guests
 * that each run one node script (the host's node and files, seen at the same paths) and power
 * off. Everything the lab starts or creates is removed by {@link Lab.close}, and also when the
 * process exits or is interrupted.
 */
export class Lab {
  /** The kernel and initramfs the guests boot. */
  readonly image: LabImage;
  /** KVM when it works on this machine, TCG otherwise. */
  readonly accel: Accel;
  /** The lab's scratch folder on the host (sockets, job folders). */
  readonly dir: string;
  /** The guests, with their defaults filled in. */
  readonly guests: readonly LabGuest[];
  #servers = new Map<string, IvshmemServer>();
  #shm = new Map<string, { path: string; size: number }>();
  #running = new Set<Guest>();
  #options: LabOptions;
  #runs = 0;
  #closed = false;
  #cleanup: () => void;

  /** @internal */
  constructor(options: LabOptions, image: LabImage, dir: string) {
    this.#options = options;
    this.image = image;
    this.dir = dir;
    this.accel = !options.accel || options.accel === 'auto' ? detectAccel() : options.accel;
    this.guests = options.guests.map((g, i) => ({
      name: g.name ?? `guest${i}`,
      devices: g.devices ?? [],
      iommu: g.iommu ?? (g.devices ?? []).some((d) => d.kind === 'doorbell'),
      memoryMb: g.memoryMb ?? 512,
      ...(g.net ? { net: { link: g.net.link ?? 'default', address: g.net.address, mac: guestMac(i) } } : {}),
    }));
    this.#cleanup = onCleanup(() => this.#release());
    try {
      this.#check();
    } catch (error) {
      this.#cleanup();
      throw error;
    }
  }

  #check(): void {
    const names = this.guests.map((g) => g.name);
    const twice = names.find((name, i) => names.indexOf(name) !== i);
    if (twice !== undefined) throw new LabError(`two lab guests are named ${twice}`);
    const links = new Map<string, LabGuest[]>();
    for (const guest of this.guests) {
      if (!guest.net) continue;
      checkNetAddress(guest.net.address, guest.name);
      if (!/^[\w-]+$/.test(guest.net.link)) throw new LabError(`guest ${guest.name}: net.link must be letters, digits, _ or -; got ${JSON.stringify(guest.net.link)}`);
      const on = [...(links.get(guest.net.link) ?? []), guest];
      if (on.length > 2) throw new LabError(`network link ${guest.net.link} joins only two guests; ${on.map((g) => g.name).join(', ')} name it`);
      if (on.length === 2 && on[0]!.net!.address.split('/')[0] === guest.net.address.split('/')[0]) {
        throw new LabError(`guests ${on[0]!.name} and ${guest.name} have the same address ${guest.net.address} on link ${guest.net.link}`);
      }
      links.set(guest.net.link, on);
    }
  }

  /** The named lab server (started by {@link startLab}). */
  server(name = 'default'): IvshmemServer {
    const server = this.#servers.get(name);
    if (!server) throw new LabError(`no lab server named ${name} (servers: ${[...this.#servers.keys()].join(', ') || 'none'})`);
    return server;
  }

  /** The named server's socket, for `connect()` from `ivshmem` on the host. */
  socketPath(name = 'default'): string {
    return this.server(name).socketPath;
  }

  /** The host file behind the named ivshmem-plain memory, for `openFile`. */
  shmPath(name = 'default'): string {
    const shm = this.#shm.get(name);
    if (!shm) throw new LabError(`no plain memory named ${name}`);
    return shm.path;
  }

  /**
   * Boots the named guests together, runs each one's job, and resolves when all have powered
   * off (or were killed on timeout). Guests start one after another, each once its doorbell
   * devices are connected, so server IDs follow the order of `jobs`. Aborting `signal` kills
   * the guests and rejects with its reason.
   */
  async run(jobs: Record<string, GuestJob>, options: { signal?: AbortSignal } = {}): Promise<Record<string, GuestResult>> {
    if (this.#closed) throw new LabError('the lab is closed');
    const { signal } = options;
    signal?.throwIfAborted();
    const names = Object.keys(jobs);
    const configs = names.map((name) => {
      const config = this.guests.find((g) => g.name === name);
      if (!config) throw new LabError(`no lab guest named ${name} (guests: ${this.guests.map((g) => g.name).join(', ')})`);
      return config;
    });
    const nets = await this.#netEnds(configs);
    const release = await acquireSlots(configs.length, this.#options.maxGuests ?? 2, signal);
    const started: Guest[] = [];
    const abort = (): void => started.forEach((guest) => guest.kill());
    signal?.addEventListener('abort', abort);
    try {
      const run = ++this.#runs;
      for (const config of configs) {
        // An abort while an earlier guest booted must not start the next one.
        signal?.throwIfAborted();
        const spec = this.#spec(config, run, nets.get(config.name));
        this.#options.onProgress?.(`booting ${config.name} (${this.accel})`);
        const connected = this.#expectConnections(spec);
        const guest = await Guest.start(spec, jobs[config.name]!, this.#options.timeoutMs ?? 180_000);
        started.push(guest);
        this.#running.add(guest);
        await connected(guest);
        await publishDevices(spec);
        // The other end connects at start-up and QEMU gives up if nobody listens yet.
        if (spec.net?.role === 'listen') await this.#listening(spec.net, guest);
        signal?.throwIfAborted();
      }
    } catch (error) {
      for (const guest of started) guest.kill();
      await Promise.all(started.map((g) => g.result));
      for (const guest of started) this.#running.delete(guest);
      release();
      signal?.removeEventListener('abort', abort);
      if (signal?.aborted) throw signal.reason;
      if (error instanceof LabError && started.length) {
        const last = await started[started.length - 1]!.result;
        throw new LabError(`${error.message}\n${last.qemuLog}`.trim(), { cause: error, console: last.console });
      }
      throw error;
    }
    const results = await Promise.all(started.map((g) => g.result));
    for (const guest of started) this.#running.delete(guest);
    release();
    signal?.removeEventListener('abort', abort);
    if (signal?.aborted) throw signal.reason;
    return Object.fromEntries(results.map((r) => [r.name, r]));
  }

  /** Stops running guests and servers and removes the lab's files. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const guest of this.#running) guest.kill();
    await Promise.all([...this.#running].map((g) => g.result));
    this.#cleanup();
  }

  /** {@link Lab.close}, for `await using lab = await startLab(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal Creates the plain memory files and starts the servers. */
  async start(): Promise<void> {
    const wanted = new Map<string, LabServerConfig>(Object.entries(this.#options.servers ?? {}));
    for (const guest of this.guests) {
      for (const device of guest.devices) {
        if (device.kind === 'doorbell') {
          const name = device.server ?? 'default';
          const config = { ...wanted.get(name) };
          if (this.#options.servers?.[name]?.vectors === undefined && device.vectors !== undefined) {
            config.vectors = Math.max(config.vectors ?? 1, device.vectors);
          }
          wanted.set(name, config);
        } else {
          const name = device.shm ?? 'default';
          const size = device.size ?? DEFAULT_SIZE;
          if (!isPowerOfTwo(size)) throw new LabError(`plain memory ${name}: size must be a power of two of at least 4096, got ${size}`);
          const known = this.#shm.get(name);
          if (known && known.size !== size) throw new LabError(`plain memory ${name} is used with sizes ${known.size} and ${size}`);
          if (!known) this.#shm.set(name, { path: this.#createShm(name, size), size });
        }
      }
    }
    const servers = new Map<string, { size: number; vectors: number }>();
    for (const [name, config] of wanted) {
      const size = config.size ?? DEFAULT_SIZE;
      if (!isPowerOfTwo(size)) throw new LabError(`server ${name}: size must be a power of two of at least 4096, got ${size}`);
      const vectors = config.vectors ?? 1;
      for (const guest of this.guests) {
        for (const d of guest.devices) {
          if (d.kind === 'doorbell' && (d.server ?? 'default') === name && d.vectors !== undefined && d.vectors < vectors) {
            // QEMU refuses such a setup ("Too many eventfd received"): say so before booting.
            throw new LabError(`guest ${guest.name}: a doorbell device with ${d.vectors} vectors cannot join server ${name}, which gives every peer ${vectors}`);
          }
        }
      }
      servers.set(name, { size, vectors });
    }
    for (const [name, { size, vectors }] of servers) {
      const socket = join(this.dir, `${name}.sock`);
      this.#servers.set(name, await IvshmemServer.listen({ socket, size, vectors, shm: shmName(`server-${name}`) }));
    }
  }

  #createShm(name: string, size: number): string {
    const path = shmName(`plain-${name}`);
    const fd = openSync(path, 'wx', 0o600);
    try {
      ftruncateSync(fd, size);
    } finally {
      closeSync(fd);
    }
    return path;
  }

  // Per run: the first of a link's guests listens, the second connects; fresh endpoints.
  async #netEnds(configs: LabGuest[]): Promise<Map<string, GuestNet>> {
    const backend = !this.#options.netBackend || this.#options.netBackend === 'auto' ? detectNetBackend() : this.#options.netBackend;
    const ends = new Map<string, GuestNet>();
    const endpoints = new Map<string, string>();
    for (const config of configs) {
      if (!config.net) continue;
      const { link, address, mac } = config.net;
      const known = endpoints.get(link);
      const endpoint = known ?? (backend === 'stream' ? join(this.dir, `net-${link}-${randomBytes(3).toString('hex')}.sock`) : String(await freePort()));
      endpoints.set(link, endpoint);
      ends.set(config.name, { link, backend, role: known === undefined ? 'listen' : 'connect', endpoint, address, mac });
    }
    return ends;
  }

  async #listening(net: GuestNet, guest: Guest): Promise<void> {
    const end = Date.now() + 30_000;
    while (!netListening(net)) {
      if (!guest.running) throw new LabError(`guest ${guest.name}: QEMU stopped before its network link ${net.link} listened`);
      if (Date.now() > end) throw new LabError(`guest ${guest.name}: its network link ${net.link} did not listen within 30 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  #spec(config: LabGuest, run: number, net?: GuestNet): BootSpec {
    const jobDir = join(this.dir, `${config.name}-${run}`);
    mkdirSync(jobDir);
    writeFileSync(join(jobDir, 'console.log'), '');
    const devices: GuestDevice[] = config.devices.map((device, i) => {
      const address = deviceAddress(i);
      if (device.kind === 'doorbell') {
        const server = this.server(device.server ?? 'default');
        return { kind: 'doorbell', address, server: device.server ?? 'default', socket: server.socketPath, vectors: device.vectors ?? server.vectors };
      }
      const name = device.shm ?? 'default';
      const shm = this.#shm.get(name)!;
      return { kind: 'plain', address, shm: name, path: shm.path, size: shm.size };
    });
    return { name: config.name, image: this.image, accel: this.accel, memoryMb: config.memoryMb, iommu: config.iommu, devices, jobDir, ...(net ? { net } : {}) };
  }

  // QEMU connects each doorbell device to its server while it starts, before the guest runs:
  // waiting for those connections gives every device its server ID, in a known order.
  #expectConnections(spec: BootSpec): (guest: Guest) => Promise<void> {
    const doorbells = spec.devices.filter((d): d is Extract<GuestDevice, { kind: 'doorbell' }> => d.kind === 'doorbell');
    const cleanups: Array<() => void> = [];
    const waits = [...new Set(doorbells.map((d) => d.server))].map((name) => {
      const server = this.server(name);
      const queue = doorbells.filter((d) => d.server === name);
      return new Promise<void>((resolve) => {
        const onPeer = ({ id }: { id: number }): void => {
          queue.shift()!.peerId = id;
          if (queue.length === 0) resolve();
        };
        server.on('peer-connected', onPeer);
        cleanups.push(() => server.off('peer-connected', onPeer));
      });
    });
    return async (guest) => {
      let timer: NodeJS.Timeout | undefined;
      const failed = guest.result.then((r) => {
        throw new LabError(`guest ${spec.name}: QEMU stopped before its doorbell devices connected`, { console: r.console });
      });
      failed.catch(() => {});
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new LabError(`guest ${spec.name}: its doorbell devices did not connect within 30 s`)), 30_000);
      });
      try {
        await Promise.race([Promise.all(waits), failed, late]);
      } finally {
        clearTimeout(timer);
        cleanups.forEach((c) => c());
      }
    };
  }

  // Synchronous, so it can run from an exit or signal handler too.
  #release(): void {
    this.#closed = true;
    for (const guest of this.#running) guest.kill();
    for (const guest of this.#running) guest.waitDeadSync();
    for (const server of this.#servers.values()) void server.close().catch(() => {});
    for (const { path } of this.#shm.values()) rmSync(path, { force: true });
    rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
  }
}

/**
 * Starts a lab: finds (or prepares) the guest image, starts the servers and creates the plain
 * memory files. Guests boot later, per {@link Lab.run}.
 *
 * @example
 * ```ts
 * const lab = await startLab({
 *   guests: [
 *     { name: 'a', devices: [{ kind: 'doorbell', vectors: 2 }] },
 *     { name: 'b', devices: [{ kind: 'doorbell', vectors: 2 }] },
 *   ],
 * });
 * try {
 *   const { a, b } = await lab.run({ a: { script: 'guest.mjs', args: ['1'] }, b: { script: 'guest.mjs', args: ['0'] } });
 *   console.log(a.exitCode, a.stdout, b.exitCode, b.stdout);
 * } finally {
 *   await lab.close();
 * }
 * ```
 */
export async function startLab(options: LabOptions): Promise<Lab> {
  if (!options || !Array.isArray(options.guests)) throw new LabError('startLab(): options.guests must be an array');
  const cached = options.image ?? (await findLabImage(options.cacheDir));
  // An image prepared before a module set was added is brought up to date (prepareLab keeps
  // the cached one when apt cannot be reached).
  const image =
    (cached && (options.image || options.prepare === false || imageIsCurrent(cached)) ? cached : null) ??
    (options.prepare === false
      ? null
      : await prepareLab({ cacheDir: options.cacheDir, onProgress: options.onProgress }));
  if (!image) throw new LabError('no prepared lab image: run prepareLab() (or `ivshmem lab prepare`) first');
  sweepLeftovers();
  const dir = mkdtempSync(join(tmpdir(), DIR_PREFIX));
  writeFileSync(join(dir, 'pid'), String(process.pid));
  if (!/^[\w./-]+$/.test(dir)) {
    rmSync(dir, { recursive: true, force: true });
    throw new LabError(`the lab's folder ${dir} must have no spaces or commas (QEMU and the kernel command line split on them): set TMPDIR`);
  }
  const lab = new Lab(options, image, dir);
  try {
    await lab.start();
  } catch (error) {
    await lab.close();
    throw error;
  }
  return lab;
}
