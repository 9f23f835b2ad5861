import { constants, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fail, ivshmemError, IvshmemError, withPath } from '../errors.js';
import { DeviceBase } from './base.js';
import { mapRegion } from '../mapping.js';
import { IVPOSITION, DOORBELL, PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER, doorbellValue, doorbellWriter } from './registers.js';
import { resolveDevice, type ListDevicesOptions, type PciDeviceInfo } from './discover.js';
import { bindDriver, checkIommu, groupOf } from './vfio-bind.js';
import { systemVfio, type VfioNative, type VfioSystem } from './vfio-system.js';

/** Options of {@link openVfio}. */
export interface OpenVfioOptions extends ListDevicesOptions {
  /**
   * Bind the device to vfio-pci if another driver (or none) has it, and restore the previous
   * binding on close. Without it, a device not bound to vfio-pci is refused.
   */
  bind?: boolean;
}


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
  /** Always `'vfio'`. */
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
  constructor(init: {
    info: PciDeviceInfo;
    group: number;
    registers: Registers;
    memory: ArrayBuffer;
    interruptFds: number[];
    undo: Array<() => void>;
    unmap: (memory: ArrayBuffer) => void;
  }) {
    super({ id: init.registers.read32(IVPOSITION), memory: init.memory, interruptFds: init.interruptFds, unmap: init.unmap });
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

  // DeviceBase has unmapped the memory by now, as vfio-pci's unbind (in the undo steps) needs:
  // it waits for every mapping of the device to go, and would hang otherwise.
  protected release(): void {
    process.off('exit', this.#onExit);
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
  return openVfioOn(systemVfio(options.sysfsRoot), address, options);
}

/** {@link openVfio} on a given system. @internal */
export function openVfioOn(sys: VfioSystem, address?: string, options: OpenVfioOptions = {}): VfioDevice {
  const { native } = sys;
  const info = resolveDevice(address, { sysfsRoot: sys.sysfsRoot });
  const undo: Array<() => void> = [];
  // Not an undo step: once the device exists, DeviceBase alone unmaps it.
  let memory: ArrayBuffer | null = null;
  const containerPath = join(sys.devRoot, 'vfio/vfio');
  try {
    const noiommu = checkIommu(sys, info);
    bindDriver(sys, info, options.bind ?? false, undo);
    const group = groupOf(info);
    const container = native.open(containerPath, constants.O_RDWR);
    undo.push(() => native.close(container));
    if (native.vfioGetApiVersion(container, containerPath) !== native.vfio.API_VERSION) {
      throw ivshmemError('ERR_IVSHMEM_NO_VFIO', `${containerPath} speaks an unknown VFIO API version`, { path: containerPath });
    }
    const iommuType = noiommu ? native.vfio.NOIOMMU_IOMMU : native.vfio.TYPE1v2_IOMMU;
    if (native.vfioCheckExtension(container, iommuType, containerPath) <= 0) {
      throw ivshmemError('ERR_IVSHMEM_NO_IOMMU', `VFIO here does not support the ${noiommu ? 'no-IOMMU' : 'type 1 v2'} IOMMU model`, { path: containerPath });
    }
    const groupPath = join(sys.devRoot, `vfio/${noiommu ? 'noiommu-' : ''}${group}`);
    const groupFd = openGroup(native, groupPath);
    undo.push(() => native.close(groupFd));
    if (!native.vfioGroupGetStatus(groupFd, groupPath).viable) {
      const members = readdirSync(join(sys.sysfsRoot, `kernel/iommu_groups/${group}/devices`)).join(', ');
      throw ivshmemError(
        'ERR_IVSHMEM_DEVICE_BUSY',
        `IOMMU group ${group} is not viable: every device in it (${members}) must be bound to vfio-pci or to no driver`, { path: groupPath });
    }
    native.vfioGroupSetContainer(groupFd, container, groupPath);
    native.vfioSetIommu(container, iommuType, containerPath);
    const deviceFd = native.vfioGroupGetDeviceFd(groupFd, info.address, groupPath);
    undo.push(() => native.close(deviceFd));

    enableBusMaster(native, deviceFd, info.address);
    const registers = openRegisters(native, deviceFd, info.address);
    undo.push(() => registers.release());
    const bar2 = native.vfioDeviceGetRegionInfo(deviceFd, native.vfio.PCI_BAR2_REGION_INDEX, info.address);
    if (!(bar2.flags & native.vfio.REGION_INFO_FLAG_MMAP) || bar2.size === 0) {
      throw ivshmemError('ERR_IVSHMEM_SIZE', `${info.address}: BAR2 (the shared memory) cannot be mapped through VFIO`, { path: info.address });
    }
    memory = mapRegion(deviceFd, bar2.offset, bar2.size, true, info.address, native);
    const interruptFds = wireInterrupts(native, deviceFd, info.address, undo);
    // From here the device owns everything: DeviceBase closes the eventfds, release() the rest.
    try {
      return new VfioDevice({ info, group, registers, memory, interruptFds, undo, unmap: native.unmap });
    } catch (error) {
      interruptFds.forEach((fd) => native.close(fd));
      throw error;
    }
  } catch (error) {
    try {
      // The memory first: restoring the driver waits for the device's mappings to go.
      if (memory) native.unmap(memory);
      runUndo(undo);
    } catch {
      // The original error says more than a failure to clean up after it.
    }
    throw error;
  }
}

function openGroup(native: VfioNative, path: string): number {
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
function enableBusMaster(native: VfioNative, deviceFd: number, address: string): void {
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
function openRegisters(native: VfioNative, deviceFd: number, address: string): Registers {
  const bar0 = native.vfioDeviceGetRegionInfo(deviceFd, native.vfio.PCI_BAR0_REGION_INDEX, address);
  if (bar0.size < 16) throw ivshmemError('ERR_IVSHMEM_SIZE', `${address}: BAR0 (registers) is missing`, { path: address });
  if (bar0.flags & native.vfio.REGION_INFO_FLAG_MMAP) {
    const regs = mapRegion(deviceFd, bar0.offset, bar0.size, true, address, native);
    const ringDoorbell = doorbellWriter(regs, native);
    return {
      read32: (offset) => native.read32(regs, offset),
      write32: (offset, value) => (offset === DOORBELL ? ringDoorbell(value) : native.write32(regs, offset, value)),
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
function wireInterrupts(native: VfioNative, deviceFd: number, address: string, undo: Array<() => void>): number[] {
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
