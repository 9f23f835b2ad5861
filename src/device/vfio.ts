import { spawnSync } from 'node:child_process';
import { constants, existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fail, ivshmemError, IvshmemError, withPath, type ErrnoCode } from '../errors.js';
import { native } from '../native.js';
import { DeviceBase } from './base.js';
import { IVPOSITION, DOORBELL, PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER, doorbellValue } from './registers.js';
import { resolveDevice, type ListDevicesOptions, type PciDeviceInfo } from './discover.js';

/** Options of {@link openVfio}. */
export interface OpenVfioOptions extends ListDevicesOptions {
  /**
   * Bind the device to vfio-pci if another driver (or none) has it, and restore the previous
   * binding on close. Without it, a device not bound to vfio-pci is refused.
   */
  bind?: boolean;
}

const VFIO_DRIVER = 'vfio-pci';
const CONTAINER = '/dev/vfio/vfio';

/** How a device's BAR0 registers are reached: mapped, or through the region with pread/pwrite. */
interface Registers {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  release(): void;
}

/**
 * An ivshmem device in a Linux guest through VFIO: memory, ID, doorbells, and one interrupt
 * event per MSI-X vector. Needs root (or access to /dev/vfio/N), vfio-pci, and an IOMMU: a
 * vIOMMU in the guest (QEMU `-M q35,kernel-irqchip=split -device intel-iommu,intremap=on`,
 * kernel `intel_iommu=on`) or a kernel with VFIO no-IOMMU mode.
 */
export class VfioDevice extends DeviceBase {
  readonly backend = 'vfio' as const;
  /** The PCI address. */
  readonly address: string;
  /** The IOMMU group number. */
  readonly iommuGroup: number;
  #registers: Registers;
  #undo: Array<() => void>;
  // A process that ends without close() would leave the device bound to vfio-pci: close it
  // on the way out (everything in close() is synchronous).
  #onExit = (): void => this.close();

  /** @internal */
  constructor(init: { info: PciDeviceInfo; group: number; registers: Registers; memory: ArrayBuffer; interruptFds: number[]; undo: Array<() => void> }) {
    super({ id: init.registers.read32(IVPOSITION), memory: init.memory, interruptFds: init.interruptFds });
    this.address = init.info.address;
    this.iommuGroup = init.group;
    this.#registers = init.registers;
    this.#undo = init.undo;
    process.once('exit', this.#onExit);
  }

  protected doorbell(peer: number, vector: number): void {
    this.#registers.write32(DOORBELL, doorbellValue(peer, vector));
  }

  protected override noDoorbell(): never {
    fail('ERR_IVSHMEM_NO_DOORBELL', `${this.address} is an ivshmem-plain device: it has no doorbell and no interrupts (use ivshmem-doorbell).`);
  }

  protected release(): void {
    process.off('exit', this.#onExit);
    // The memory goes before the driver is restored: vfio-pci's unbind waits for every mapping
    // of the device to go, and would hang here otherwise.
    native.unmap(this.memory);
    runUndo(this.#undo);
  }
}

function runUndo(undo: Array<() => void>): void {
  let first: unknown;
  for (const step of undo.reverse()) {
    try {
      step();
    } catch (error) {
      first ??= error;
    }
  }
  undo.length = 0;
  if (first) throw first;
}


/**
 * Opens an ivshmem device through VFIO. Without an address, the first ivshmem device.
 *
 * @example
 * ```ts
 * const dev = openVfio('0000:00:03.0', { bind: true });
 * dev.on('interrupt', (vector, count) => console.log('rung on', vector, count));
 * dev.ring(1, 0); // peer 1, vector 0
 * ```
 */
export function openVfio(address?: string, options: OpenVfioOptions = {}): VfioDevice {
  const info = resolveDevice(address, options);
  const undo: Array<() => void> = [];
  try {
    const noiommu = checkIommu(info);
    bindDriver(info, options.bind ?? false, undo);
    const group = groupOf(info);
    const container = native.open(CONTAINER, constants.O_RDWR);
    undo.push(() => native.close(container));
    if (native.vfioGetApiVersion(container, CONTAINER) !== native.vfio.API_VERSION) {
      throw ivshmemError('ERR_IVSHMEM_NO_VFIO', `${CONTAINER} speaks an unknown VFIO API version`, { path: CONTAINER });
    }
    const iommuType = noiommu ? native.vfio.NOIOMMU_IOMMU : native.vfio.TYPE1v2_IOMMU;
    if (native.vfioCheckExtension(container, iommuType, CONTAINER) <= 0) {
      throw ivshmemError('ERR_IVSHMEM_NO_IOMMU', `VFIO here does not support the ${noiommu ? 'no-IOMMU' : 'type 1 v2'} IOMMU model`, { path: CONTAINER });
    }
    const groupPath = `/dev/vfio/${noiommu ? 'noiommu-' : ''}${group}`;
    const groupFd = openGroup(groupPath);
    undo.push(() => native.close(groupFd));
    if (!native.vfioGroupGetStatus(groupFd, groupPath).viable) {
      const members = readdirSync(`/sys/kernel/iommu_groups/${group}/devices`).join(', ');
      throw ivshmemError(
        'ERR_IVSHMEM_DEVICE_BUSY',
        `IOMMU group ${group} is not viable: every device in it (${members}) must be bound to vfio-pci or to no driver`, { path: groupPath });
    }
    native.vfioGroupSetContainer(groupFd, container, groupPath);
    native.vfioSetIommu(container, iommuType, CONTAINER);
    const deviceFd = native.vfioGroupGetDeviceFd(groupFd, info.address, groupPath);
    undo.push(() => native.close(deviceFd));

    enableBusMaster(deviceFd, info.address);
    const registers = openRegisters(deviceFd, info.address);
    undo.push(() => registers.release());
    const bar2 = native.vfioDeviceGetRegionInfo(deviceFd, native.vfio.PCI_BAR2_REGION_INDEX, info.address);
    if (!(bar2.flags & native.vfio.REGION_INFO_FLAG_MMAP) || bar2.size === 0) {
      throw ivshmemError('ERR_IVSHMEM_SIZE', `${info.address}: BAR2 (the shared memory) cannot be mapped through VFIO`, { path: info.address });
    }
    const memory = native.map(deviceFd, bar2.offset, bar2.size, true, info.address);
    undo.push(() => native.unmap(memory));
    const interruptFds = wireInterrupts(deviceFd, info.address, undo);
    // From here the device owns everything: DeviceBase closes the eventfds, release() the rest.
    try {
      return new VfioDevice({ info, group, registers, memory, interruptFds, undo });
    } catch (error) {
      interruptFds.forEach((fd) => native.close(fd));
      throw error;
    }
  } catch (error) {
    try {
      runUndo(undo);
    } catch {
      // The original error says more than a failure to clean up after it.
    }
    throw error;
  }
}

// Decided before touching the binding: with no IOMMU group and no no-IOMMU mode, binding
// vfio-pci would only take the device away from its driver for nothing.
function checkIommu(info: PciDeviceInfo): boolean {
  if (info.iommuGroup !== null && !isNoiommuGroup(info.iommuGroup)) return false;
  if (info.iommuGroup !== null) return true;
  const mode = readText('/sys/module/vfio/parameters/enable_unsafe_noiommu_mode');
  if (mode === 'Y' || mode === '1') return true;
  throw ivshmemError(
    'ERR_IVSHMEM_NO_IOMMU',
    `${info.address} has no IOMMU group, so VFIO cannot use it. Give the guest a vIOMMU ` +
      `(QEMU: -M q35,kernel-irqchip=split -device intel-iommu,intremap=on, before the ivshmem device; kernel: intel_iommu=on), ` +
      `or use a kernel with VFIO no-IOMMU mode (modprobe vfio enable_unsafe_noiommu_mode=1). ` +
      `Without interrupts, openDevice(address, { backend: 'sysfs' }) still gives memory and doorbells.`, { path: info.sysfsPath });
}

function isNoiommuGroup(group: number): boolean {
  return readText(`/sys/kernel/iommu_groups/${group}/name`) === 'vfio-noiommu';
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function sysfsWrite(path: string, value: string): void {
  try {
    writeFileSync(path, value);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    const code = (e.code ?? 'EIO') as ErrnoCode;
    throw ivshmemError(code, `${code}: cannot write '${value.trim()}' to ${path}${code === 'EACCES' || code === 'EPERM' ? ' (binding drivers needs root)' : ''}`, {
      errno: e.errno === undefined ? undefined : -e.errno,
      syscall: 'write',
      path,
      cause: error,
    });
  }
}

function driverOf(info: PciDeviceInfo): string | null {
  try {
    return basename(readlinkSync(join(info.sysfsPath, 'driver')));
  } catch {
    return null;
  }
}

// driver_override rather than new_id: it binds exactly this function and no other 1af4:1110.
function bindDriver(info: PciDeviceInfo, bind: boolean, undo: Array<() => void>): void {
  const current = driverOf(info);
  if (current === VFIO_DRIVER) return;
  if (!bind) {
    throw ivshmemError(
      'ERR_IVSHMEM_DEVICE_BUSY',
      current
        ? `${info.address} is held by the ${current} driver, not vfio-pci: pass { bind: true } to rebind it (restored on close)`
        : `${info.address} is not bound to vfio-pci: pass { bind: true } to bind it (released on close)`, { path: info.sysfsPath });
  }
  const drivers = '/sys/bus/pci/drivers';
  if (!existsSync(join(drivers, VFIO_DRIVER))) {
    spawnSync('modprobe', [VFIO_DRIVER], { stdio: 'ignore' });
    if (!existsSync(join(drivers, VFIO_DRIVER))) {
      throw ivshmemError('ERR_IVSHMEM_NO_VFIO', `the vfio-pci driver is not loaded and modprobe vfio-pci failed`, { path: join(drivers, VFIO_DRIVER) });
    }
  }
  const overridePath = join(info.sysfsPath, 'driver_override');
  const previousOverride = readText(overridePath);
  const done = { override: false, unbound: false, bound: false };
  // One step that undoes what was done, in the only order that works: a driver_override
  // naming vfio-pci would keep the previous driver from binding again.
  undo.push(() => {
    if (done.bound) sysfsWrite(join(drivers, VFIO_DRIVER, 'unbind'), info.address);
    // An empty line clears driver_override; "(null)" is how sysfs shows "none".
    if (done.override) sysfsWrite(overridePath, previousOverride && previousOverride !== '(null)' ? previousOverride : '\n');
    if (done.unbound && current) sysfsWrite(join(drivers, current, 'bind'), info.address);
  });
  sysfsWrite(overridePath, VFIO_DRIVER);
  done.override = true;
  if (current) {
    sysfsWrite(join(info.sysfsPath, 'driver', 'unbind'), info.address);
    done.unbound = true;
  }
  sysfsWrite(join(drivers, VFIO_DRIVER, 'bind'), info.address);
  done.bound = true;
}

function groupOf(info: PciDeviceInfo): number {
  const link = join(info.sysfsPath, 'iommu_group');
  try {
    return Number(basename(readlinkSync(link)));
  } catch {
    throw ivshmemError('ERR_IVSHMEM_NO_IOMMU', `${info.address} has no IOMMU group after binding vfio-pci`, { path: link });
  }
}

function openGroup(path: string): number {
  try {
    return native.open(path, constants.O_RDWR);
  } catch (error) {
    const code = (error as IvshmemError).code;
    if (code === 'EBUSY') {
      throw ivshmemError('ERR_IVSHMEM_DEVICE_BUSY', `${path} is open in another process (a VFIO group has one user at a time)`, { path });
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw ivshmemError(code, `${code}: no permission to open ${path}: run as root or give this user access to the VFIO group`, { syscall: 'open', path, cause: error });
    }
    throw withPath(error, path);
  }
}

// vfio-pci leaves bus mastering off, and MSI-X messages are bus-master writes: without this
// bit no interrupt ever arrives.
function enableBusMaster(deviceFd: number, address: string): void {
  const config = native.vfioDeviceGetRegionInfo(deviceFd, native.vfio.PCI_CONFIG_REGION_INDEX, address);
  const word = new Uint8Array(2);
  native.pread(deviceFd, word, config.offset + PCI_COMMAND, address);
  const command = word[0]! | (word[1]! << 8);
  const wanted = command | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
  if (wanted === command) return;
  word[0] = wanted & 0xff;
  word[1] = wanted >> 8;
  native.pwrite(deviceFd, word, config.offset + PCI_COMMAND, address);
}

// Mapped when VFIO allows it (a 256-byte BAR is mappable only when page-aligned); otherwise
// the same accesses through the region with pread/pwrite.
function openRegisters(deviceFd: number, address: string): Registers {
  const bar0 = native.vfioDeviceGetRegionInfo(deviceFd, native.vfio.PCI_BAR0_REGION_INDEX, address);
  if (bar0.size < 16) throw ivshmemError('ERR_IVSHMEM_SIZE', `${address}: BAR0 (registers) is missing`, { path: address });
  if (bar0.flags & native.vfio.REGION_INFO_FLAG_MMAP) {
    const regs = native.map(deviceFd, bar0.offset, bar0.size, true, address);
    return {
      read32: (offset) => native.read32(regs, offset),
      write32: (offset, value) => native.write32(regs, offset, value),
      release: () => native.unmap(regs),
    };
  }
  const word = new Uint8Array(4);
  const view = new DataView(word.buffer);
  return {
    read32: (offset) => {
      native.pread(deviceFd, word, bar0.offset + offset, address);
      return view.getUint32(0, true);
    },
    write32: (offset, value) => {
      view.setUint32(0, value, true);
      native.pwrite(deviceFd, word, bar0.offset + offset, address);
    },
    release: () => {},
  };
}

// One eventfd per MSI-X vector. A plain device has no MSI-X: no vectors, no interrupts.
function wireInterrupts(deviceFd: number, address: string, undo: Array<() => void>): number[] {
  const msix = native.vfioDeviceGetIrqInfo(deviceFd, native.vfio.PCI_MSIX_IRQ_INDEX, address);
  if (msix.count === 0) return [];
  const fds: number[] = [];
  try {
    for (let v = 0; v < msix.count; v++) fds.push(native.eventfdCreate());
    native.vfioDeviceSetIrqs(deviceFd, native.vfio.PCI_MSIX_IRQ_INDEX, 0, fds, address);
  } catch (error) {
    fds.forEach((fd) => native.close(fd));
    throw error;
  }
  undo.push(() => native.vfioDeviceSetIrqs(deviceFd, native.vfio.PCI_MSIX_IRQ_INDEX, 0, [], address));
  return fds;
}
