// Handing a PCI device to vfio-pci through sysfs, and giving it back: the IOMMU checks, the
// driver binding (undone on close), the device's IOMMU group. Every path is under the
// injected sysfs root.
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ivshmemError, type ErrnoCode } from '../errors.js';
import type { PciDeviceInfo } from './discover.js';
import type { VfioSystem } from './vfio-system.js';

const VFIO_DRIVER = 'vfio-pci';

// Decided before touching the binding: with no IOMMU group and no no-IOMMU mode, binding
// vfio-pci would only take the device away from its driver for nothing.
export function checkIommu(sys: VfioSystem, info: PciDeviceInfo): boolean {
  if (info.iommuGroup !== null && !isNoiommuGroup(sys, info.iommuGroup)) return false;
  if (info.iommuGroup !== null) return true;
  const mode = readText(join(sys.sysfsRoot, 'module/vfio/parameters/enable_unsafe_noiommu_mode'));
  if (mode === 'Y' || mode === '1') return true;
  throw ivshmemError(
    'ERR_IVSHMEM_NO_IOMMU',
    `${info.address} has no IOMMU group, so VFIO cannot use it. Give the guest a vIOMMU ` +
      `(QEMU: -M q35,kernel-irqchip=split -device intel-iommu,intremap=on, before the ivshmem device; kernel: intel_iommu=on), ` +
      `or use a kernel with VFIO no-IOMMU mode (modprobe vfio enable_unsafe_noiommu_mode=1). ` +
      `Without interrupts, openDevice(address, { backend: 'sysfs' }) still gives memory and doorbells.`, { path: info.sysfsPath });
}

function isNoiommuGroup(sys: VfioSystem, group: number): boolean {
  return readText(join(sys.sysfsRoot, `kernel/iommu_groups/${group}/name`)) === 'vfio-noiommu';
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
export function bindDriver(sys: VfioSystem, info: PciDeviceInfo, bind: boolean, undo: Array<() => void>): void {
  const current = driverOf(info);
  if (current === VFIO_DRIVER) return;
  if (!bind) {
    throw ivshmemError(
      'ERR_IVSHMEM_DEVICE_BUSY',
      current
        ? `${info.address} is held by the ${current} driver, not vfio-pci: pass { bind: true } to rebind it (restored on close)`
        : `${info.address} is not bound to vfio-pci: pass { bind: true } to bind it (released on close)`, { path: info.sysfsPath });
  }
  const drivers = join(sys.sysfsRoot, 'bus/pci/drivers');
  if (!existsSync(join(drivers, VFIO_DRIVER))) {
    sys.modprobe(VFIO_DRIVER);
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

export function groupOf(info: PciDeviceInfo): number {
  const link = join(info.sysfsPath, 'iommu_group');
  try {
    return Number(basename(readlinkSync(link)));
  } catch {
    throw ivshmemError('ERR_IVSHMEM_NO_IOMMU', `${info.address} has no IOMMU group after binding vfio-pci`, { path: link });
  }
}

