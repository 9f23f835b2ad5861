// One guest = one QEMU process running one job, then powering off.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Accel } from './accel.js';
import { onCleanup } from './cleanup.js';
import { LabError } from './errors.js';
import { INIT_TAG, JOB_FILES } from './initramfs.js';
import type { LabImage } from './prepare.js';

/** An ivshmem device as a guest sees it, with where it lives on the host. */
export type GuestDevice =
  | {
      /** An `ivshmem-doorbell` device wired to a lab server. */
      kind: 'doorbell';
      /** PCI address in the guest, e.g. `0000:00:10.0`. */
      address: string;
      /** The lab server's name. */
      server: string;
      /** The server's socket on the host. */
      socket: string;
      /** `vectors=` of the QEMU device. */
      vectors: number;
      /** The ID the server gave this device, once QEMU connected. */
      peerId?: number;
    }
  | {
      /** An `ivshmem-plain` device: shared memory, no doorbells. */
      kind: 'plain';
      /** PCI address in the guest, e.g. `0000:00:11.0`. */
      address: string;
      /** The lab's name for the memory. */
      shm: string;
      /** The backing file on the host (under /dev/shm). */
      path: string;
      /** Bytes of shared memory. */
      size: number;
    };

/**
 * A guest's end of a point-to-point virtio-net link to another guest. QEMU carries the frames
 * over a host socket of its own (a Unix socket, or loopback TCP where `-netdev stream` is
 * missing): nothing reaches a host network.
 */
export interface GuestNet {
  /** The lab's name for the link. */
  link: string;
  /** `stream`: `-netdev stream` over a Unix socket (QEMU 7.2+); `socket`: `-netdev socket` on 127.0.0.1. */
  backend: 'stream' | 'socket';
  /** The first guest of a link listens, the second connects. */
  role: 'listen' | 'connect';
  /** The Unix socket's path (`stream`) or the loopback port (`socket`). */
  endpoint: string;
  /** The guest's address on eth0, e.g. `10.0.0.1/24`. */
  address: string;
  /** The virtio-net device's MAC address. */
  mac: string;
}

/** What QEMU needs to boot one guest. */
export interface BootSpec {
  /** The guest's name in the lab. */
  name: string;
  /** The kernel and initramfs to boot. */
  image: LabImage;
  /** KVM or TCG. */
  accel: Accel;
  /** Guest memory in MiB. */
  memoryMb: number;
  /** Whether the guest has a vIOMMU (needed for VFIO). */
  iommu: boolean;
  /** Its ivshmem devices, in PCI order. */
  devices: GuestDevice[];
  /** The host folder the guest's job and its results go through. */
  jobDir: string;
  /** Its end of a virtio-net link to another guest, if any. */
  net?: GuestNet;
}

/** The PCI slot of the virtio-net device: clear of the ivshmem devices' slots (0x10 on). */
export const NET_SLOT = '0f';

/** A script for a guest to run: the host's node runs it in the guest, with the host's files. */
export interface GuestJob {
  /** The script, a path on the host (the guest sees the host's / at the same paths). */
  script: string;
  /** Arguments for the script. */
  args?: string[];
  /** Added to the guest's environment. */
  env?: Record<string, string>;
  /** Working directory in the guest. Default: the host's current directory. */
  cwd?: string;
  /** Kills the guest after this long. Default: the lab's timeout. */
  timeoutMs?: number;
}

/** How a guest's job ended. */
export interface GuestResult {
  /** The guest's name. */
  name: string;
  /** The job's exit status; null when it never finished (timeout, guest crash, QEMU failure). */
  exitCode: number | null;
  /** What the script wrote to standard output. */
  stdout: string;
  /** What the script wrote to standard error. */
  stderr: string;
  /** The guest's serial console: kernel messages and the lab's /init. */
  console: string;
  /** QEMU's own output (device setup errors land here). */
  qemuLog: string;
  /** True when the guest was killed for taking too long. */
  timedOut: boolean;
  /**
   * The guest's /init reached the job. False when the guest died before it (a kernel that did
   * not boot, QEMU refusing the setup): such a failure says nothing about the job.
   */
  started: boolean;
  /** From the start of QEMU to the guest's end, in milliseconds. */
  durationMs: number;
  /** The devices, with the IDs the servers assigned. */
  devices: GuestDevice[];
}

let pdeathsig: boolean | undefined;

// With setpriv, QEMU dies with us even on SIGKILL, when no cleanup handler can run.
function wrapper(): string[] {
  pdeathsig ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0;
  return pdeathsig ? ['setpriv', '--pdeathsig', 'KILL', '--'] : [];
}

/** The QEMU command line for a guest. */
export function qemuArgs(spec: BootSpec): string[] {
  const machine = spec.iommu ? 'q35,kernel-irqchip=split' : 'q35';
  // no_timer_check: the kernel's boot-time check that the timer interrupt arrives through the
  // IO-APIC fails when a loaded host starves the vCPU, and with interrupt remapping (the vIOMMU)
  // the kernel then panics ("timer doesn't work through Interrupt-remapped IO-APIC").
  const append = ['console=ttyS0', 'quiet', 'panic=-1', 'no_timer_check', `labjob=${spec.jobDir}`];
  if (spec.iommu) append.push('intel_iommu=on');
  if (spec.net) append.push(`labnet=${spec.net.address}`);
  const args = [
    '-accel', spec.accel, '-M', machine, '-cpu', spec.accel === 'kvm' ? 'host' : 'max',
    '-smp', '1', '-m', String(spec.memoryMb),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', spec.image.kernel, '-initrd', spec.image.initrd, '-append', append.join(' '),
    '-serial', `file:${join(spec.jobDir, 'console.log')}`,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${spec.jobDir},mount_tag=job,security_model=none,multidevs=remap`,
  ];
  // The vIOMMU must come before the devices it translates for.
  if (spec.iommu) args.push('-device', 'intel-iommu,intremap=on');
  spec.devices.forEach((device, i) => {
    const addr = `addr=${device.address.split(':')[2]!.replace(/\.0$/, '')}`;
    if (device.kind === 'doorbell') {
      args.push('-chardev', `socket,path=${device.socket},id=ivc${i}`);
      args.push('-device', `ivshmem-doorbell,chardev=ivc${i},vectors=${device.vectors},${addr}`);
    } else {
      args.push('-object', `memory-backend-file,id=ivm${i},share=on,mem-path=${device.path},size=${device.size}`);
      args.push('-device', `ivshmem-plain,memdev=ivm${i},${addr}`);
    }
  });
  if (spec.net) args.push(...netArgs(spec.net));
  return args;
}

function netArgs(net: GuestNet): string[] {
  const listen = net.role === 'listen';
  const backend =
    net.backend === 'stream'
      ? `stream,id=net0,server=${listen ? 'on' : 'off'},addr.type=unix,addr.path=${net.endpoint}`
      : `socket,id=net0,${listen ? 'listen' : 'connect'}=127.0.0.1:${net.endpoint}`;
  return ['-netdev', backend, '-device', `virtio-net-pci,netdev=net0,mac=${net.mac},addr=${NET_SLOT}`];
}

/** The PCI address the lab gives a guest's `index`-th ivshmem device. */
export function deviceAddress(index: number): string {
  return `0000:00:${(0x10 + index).toString(16).padStart(2, '0')}.0`;
}

const DEVICES_FILE = 'devices.json';

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function runScript(spec: BootSpec, job: GuestJob): string {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    IVSHMEM_LAB_GUEST: spec.name,
    ...job.env,
  };
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${quote(v)}`);
  // Read at run time: the server IDs are known only once QEMU has connected.
  exports.push(`export IVSHMEM_LAB_DEVICES="$(cat ${quote(join(spec.jobDir, DEVICES_FILE))})"`);
  const command = [process.execPath, job.script, ...(job.args ?? [])].map(quote).join(' ');
  return [`cd ${quote(job.cwd ?? process.cwd())} || exit 125`, ...exports, `exec ${command}`, ''].join('\n');
}

/** Writes the devices (with their server IDs, once known) where the guest's job reads them. */
export async function publishDevices(spec: BootSpec): Promise<void> {
  await writeFile(join(spec.jobDir, DEVICES_FILE), JSON.stringify(spec.devices));
}

/** A running guest. */
export class Guest {
  readonly name: string;
  readonly spec: BootSpec;
  /** Settles when QEMU exited and the job's outputs were read; never rejects. */
  readonly result: Promise<GuestResult>;
  #child: ChildProcess;
  #killed = false;

  private constructor(spec: BootSpec, child: ChildProcess, timeoutMs: number) {
    this.name = spec.name;
    this.spec = spec;
    this.#child = child;
    const started = Date.now();
    const log: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => log.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => log.push(chunk));
    const release = onCleanup(() => this.kill());
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.kill();
    }, timeoutMs);
    this.result = new Promise<string>((resolve) => {
      child.on('error', (error) => resolve(`cannot start QEMU: ${error.message}\n`));
      child.on('close', (code, signal) => resolve(code === 0 || this.#killed ? '' : `QEMU exited with ${signal ?? code}\n`));
    }).then(async (exitNote) => {
      clearTimeout(timer);
      release();
      return this.#collect(Buffer.concat(log).toString() + exitNote, timedOut, Date.now() - started);
    });
  }

  /** Writes the job and starts QEMU. */
  static async start(spec: BootSpec, job: GuestJob, timeoutMs: number): Promise<Guest> {
    // setTimeout fires at once for anything it cannot hold (NaN, Infinity, > 2^31 - 1 ms).
    const limit = job.timeoutMs ?? timeoutMs;
    if (!(limit > 0 && limit <= 2 ** 31 - 1)) throw new LabError(`guest timeout must be 1..${2 ** 31 - 1} ms, got ${String(limit)}`);
    await writeFile(join(spec.jobDir, JOB_FILES.script), runScript(spec, job));
    await publishDevices(spec);
    const [command, ...args] = [...wrapper(), 'qemu-system-x86_64', ...qemuArgs(spec)];
    const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    return new Guest(spec, child, limit);
  }

  /** True until QEMU exited. */
  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Stops QEMU at once (SIGKILL): the guest's state is not worth a clean shutdown. */
  kill(): void {
    if (!this.running) return;
    this.#killed = true;
    try {
      this.#child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }

  /**
   * Waits, blocking the thread for at most `ms`, until QEMU is dead (a zombie or gone). Cleanups
   * run synchronously (an 'exit' listener cannot await), and a killed QEMU still writes into the
   * job folder until the kernel has taken it down: removing the folder before that races it.
   */
  waitDeadSync(ms = 2000): void {
    const pid = this.#child.pid;
    if (pid === undefined) return;
    const tick = new Int32Array(new SharedArrayBuffer(4));
    for (const end = Date.now() + ms; Date.now() < end; Atomics.wait(tick, 0, 0, 10)) {
      let stat: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        return; // reaped
      }
      // The state follows the command name, which is in parentheses and may hold anything.
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return;
    }
  }

  async #collect(qemuLog: string, timedOut: boolean, durationMs: number): Promise<GuestResult> {
    const read = (file: string): Promise<string> => readFile(join(this.spec.jobDir, file), 'utf8').catch(() => '');
    const exitText = (await read(JOB_FILES.exit)).trim();
    const consoleLog = await read('console.log');
    const exitCode = exitText === '' || !existsSync(join(this.spec.jobDir, JOB_FILES.exit)) ? null : Number(exitText);
    return {
      name: this.name,
      exitCode,
      stdout: await read(JOB_FILES.stdout),
      stderr: await read(JOB_FILES.stderr),
      console: consoleLog,
      qemuLog,
      timedOut,
      started: consoleLog.includes(`${INIT_TAG} job start`),
      durationMs,
      devices: this.spec.devices,
    };
  }
}

/** A short account of a failed guest: exit, stderr, QEMU's complaints and /init's last words. */
export function describeFailure(result: GuestResult): string {
  const lines = [
    `guest ${result.name}: ${result.timedOut ? 'timed out' : result.exitCode === null ? 'never finished its job' : `exit ${result.exitCode}`} after ${result.durationMs} ms`,
  ];
  const tail = (text: string, n: number): string => text.trimEnd().split('\n').slice(-n).join('\n');
  if (result.stderr.trim()) lines.push(`--- stderr\n${tail(result.stderr, 30)}`);
  if (result.stdout.trim()) lines.push(`--- stdout\n${tail(result.stdout, 10)}`);
  if (result.qemuLog.trim()) lines.push(`--- qemu\n${tail(result.qemuLog, 10)}`);
  const init = result.console.split('\n').filter((l) => l.includes(INIT_TAG));
  lines.push(`--- console\n${tail(result.console, init.length ? 15 : 30)}`);
  return lines.join('\n');
}
