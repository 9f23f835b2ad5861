import { constants, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail, withPath } from '../errors.js';
import { native, type Native } from '../native.js';
import { DeviceBase } from './base.js';
import { mapRegion } from '../mapping.js';
import { IVPOSITION, DOORBELL, PCI_COMMAND, PCI_COMMAND_MEMORY, doorbellValue, doorbellWriter } from './registers.js';
import { resolveDevice, type ListDevicesOptions, type PciDeviceInfo } from './discover.js';

/** Options of {@link openSysfs}. */
export interface OpenSysfsOptions extends ListDevicesOptions {
  /** Map BAR2 write-combined (`resource2_wc`): faster bulk writes, weaker ordering. Default false. */
  writeCombine?: boolean;
}


/** The addon calls the sysfs backend makes. */
export type SysfsNative = Pick<Native, 'open' | 'close' | 'fstat' | 'map' | 'unmap' | 'read32' | 'write32'>;

/**
 * What the sysfs backend needs from the system, injectable so that its logic runs in unit tests
 * (over regular files standing in for BARs); the lab's guests are the proof on real devices.
 */
export interface SysfsSystem {
  native: SysfsNative;
  /** Where sysfs is mounted (`/sys`). */
  sysfsRoot: string;
}

/**
 * An ivshmem device in a Linux guest through sysfs BAR mappings: memory, ID and doorbells, but
 * no interrupts (the doorbell device signals only by MSI-X, which needs VFIO). Needs root.
 */
export class SysfsDevice extends DeviceBase {
  /** Always `'sysfs'`. */
  readonly backend = 'sysfs' as const;
  /** The PCI address. */
  readonly address: string;
  /** `doorbell` or `plain`. */
  readonly kind: PciDeviceInfo['kind'];
  #registers: ArrayBuffer;
  readonly #native: SysfsNative;
  readonly #doorbell: ((value: number) => void) | null;

  /** @internal */
  constructor(info: PciDeviceInfo, registers: ArrayBuffer, memory: ArrayBuffer, calls: SysfsNative = native) {
    const doorbell = info.kind === 'doorbell';
    // IVPosition means nothing on a plain device (it reads 0 there).
    const id = doorbell ? calls.read32(registers, IVPOSITION) : 0;
    // Peers are assumed to have as many vectors as we do; unknown (no root) still allows vector 0.
    super({ id, memory, interruptFds: [], vectors: doorbell ? (info.vectors ?? 1) : 0, unmap: calls.unmap });
    this.address = info.address;
    this.kind = info.kind;
    this.#registers = registers;
    this.#native = calls;
    this.#doorbell = doorbell ? doorbellWriter(registers, calls) : null;
  }

  protected doorbell(peer: number, vector: number): void {
    this.assertOpen();
    this.#doorbell!(doorbellValue(peer, vector));
  }

  protected override noDoorbell(): never {
    fail('ERR_IVSHMEM_NO_DOORBELL', `${this.address} is an ivshmem-plain device: it has no doorbell (use ivshmem-doorbell for interrupts).`);
  }

  protected override noInterrupts(): never {
    fail(
      'ERR_IVSHMEM_NO_INTERRUPTS',
      `The sysfs backend delivers no interrupts (${this.address}): ivshmem-doorbell signals only by MSI-X, which user space gets through VFIO. Use openDevice(address, { backend: 'vfio', bind: true }), or poll the memory.`,
    );
  }

  protected release(): void {
    this.#native.unmap(this.#registers);
  }
}

/**
 * Opens an ivshmem device through `/sys/bus/pci/devices/<address>/resource{0,2}`. Without an
 * address, the first ivshmem device.
 */
export function openSysfs(address?: string, options: OpenSysfsOptions = {}): SysfsDevice {
  return openSysfsOn({ native, sysfsRoot: options.sysfsRoot ?? '/sys' }, address, options);
}

/** {@link openSysfs} on a given system. @internal */
export function openSysfsOn(sys: SysfsSystem, address?: string, options: OpenSysfsOptions = {}): SysfsDevice {
  const { native } = sys;
  const info = resolveDevice(address, { sysfsRoot: sys.sysfsRoot });
  ensureMemoryDecoding(info.sysfsPath);
  const registers = mapResource(native, join(info.sysfsPath, 'resource0'));
  try {
    const memory = mapResource(native, join(info.sysfsPath, options.writeCombine ? 'resource2_wc' : 'resource2'));
    try {
      return new SysfsDevice(info, registers, memory, native);
    } catch (error) {
      native.unmap(memory);
      throw error;
    }
  } catch (error) {
    native.unmap(registers);
    throw error;
  }
}

function mapResource(native: SysfsNative, path: string): ArrayBuffer {
  const fd = native.open(path, constants.O_RDWR);
  try {
    const size = native.fstat(fd, path).size;
    if (size === 0) fail('ERR_IVSHMEM_SIZE', `${path} is empty: the BAR is not assigned`, { path });
    return mapRegion(fd, 0, size, true, path, native);
  } catch (error) {
    throw withPath(error, path);
  } finally {
    native.close(fd);
  }
}

// Firmware turns memory decoding on, but a driver that let go of the device (vfio-pci among
// them) may have turned it off; then every BAR access would read all-ones.
function ensureMemoryDecoding(sysfsPath: string): void {
  let command: number;
  try {
    command = readFileSync(join(sysfsPath, 'config')).readUInt16LE(PCI_COMMAND);
  } catch {
    return;
  }
  if (command & PCI_COMMAND_MEMORY) return;
  try {
    writeFileSync(join(sysfsPath, 'enable'), '1');
  } catch {
    // Not fatal here: mapping reports the permission problem with its path.
  }
}
