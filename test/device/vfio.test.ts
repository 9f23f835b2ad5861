// The VFIO backend's logic on the host: VFIO's ioctls are faked, everything else is real — a
// sysfs tree of files and links, regular files for /dev/vfio and for the device's regions
// (config space, BAR0, BAR2: pread, pwrite and mmap on them are real), real eventfds. The lab's
// guests (test/testing/*.qemu.test.ts) are the proof on real VFIO.
import { constants, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../src/native.js';
import { openVfioOn } from '../../src/device/vfio.js';
import type { VfioNative, VfioSystem } from '../../src/device/vfio-system.js';
import { openFdCount } from '../helpers.js';

const ADDRESS = '0000:00:03.0';
const GROUP = 5;
const PAGE = 4096;
// The device's regions in one file: config space, BAR0 (registers) and BAR2 (memory).
const REGIONS = { config: 0, bar0: PAGE, bar2: 2 * PAGE };
const BAR2_SIZE = 4 * PAGE;

let root: string;
let sys: VfioSystem;
let calls: string[];
let viable: boolean;

function device(): string {
  return join(root, 'sys/bus/pci/devices', ADDRESS);
}

function fakeTree(): void {
  const dir = device();
  const drivers = join(root, 'sys/bus/pci/drivers');
  for (const d of ['vfio-pci', 'ivshmem-old']) {
    mkdirSync(join(drivers, d), { recursive: true });
    writeFileSync(join(drivers, d, 'bind'), '');
    writeFileSync(join(drivers, d, 'unbind'), '');
  }
  mkdirSync(join(root, 'sys/kernel/iommu_groups', String(GROUP), 'devices'), { recursive: true });
  writeFileSync(join(root, 'sys/kernel/iommu_groups', String(GROUP), 'devices', ADDRESS), '');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vendor'), '0x1af4\n');
  writeFileSync(join(dir, 'device'), '0x1110\n');
  const bar = (start: bigint, size: bigint): string => `0x${start.toString(16)} 0x${(start + size - 1n).toString(16)} 0x40200`;
  writeFileSync(join(dir, 'resource'), [bar(0xfe000000n, 256n), bar(0xfe001000n, 4096n), bar(0x800000000n, BigInt(BAR2_SIZE))].join('\n') + '\n');
  writeFileSync(join(dir, 'driver_override'), '(null)\n');
  symlinkSync(join(drivers, 'ivshmem-old'), join(dir, 'driver'));
  symlinkSync(join(root, 'sys/kernel/iommu_groups', String(GROUP)), join(dir, 'iommu_group'));
  mkdirSync(join(root, 'dev/vfio'), { recursive: true });
  writeFileSync(join(root, 'dev/vfio/vfio'), '');
  writeFileSync(join(root, 'dev/vfio', String(GROUP)), '');
  const regions = Buffer.alloc(REGIONS.bar2 + BAR2_SIZE);
  regions.writeUInt32LE(9, REGIONS.bar0 + 8); // IVPosition
  writeFileSync(join(root, 'regions'), regions);
}

// Real calls, recorded; VFIO's ioctls answered as a device with 2 MSI-X vectors would.
function fakeNative(): VfioNative {
  const memories = new Set<ArrayBuffer>();
  const v = native.vfio;
  const region = (index: number): { index: number; flags: number; size: number; offset: number } => {
    const mmap = v.REGION_INFO_FLAG_MMAP | v.REGION_INFO_FLAG_READ | v.REGION_INFO_FLAG_WRITE;
    if (index === v.PCI_CONFIG_REGION_INDEX) return { index, flags: v.REGION_INFO_FLAG_READ | v.REGION_INFO_FLAG_WRITE, size: 256, offset: REGIONS.config };
    if (index === v.PCI_BAR0_REGION_INDEX) return { index, flags: mmap, size: 256, offset: REGIONS.bar0 };
    if (index === v.PCI_BAR2_REGION_INDEX) return { index, flags: mmap, size: BAR2_SIZE, offset: REGIONS.bar2 };
    return { index, flags: 0, size: 0, offset: 0 };
  };
  return {
    ...native,
    vfio: v,
    open: (path, flags) => {
      calls.push(`open ${path.slice(root.length)}`);
      return native.open(path, flags);
    },
    map: (fd, offset, length, writable, path) => {
      const m = native.map(fd, offset, length, writable, path);
      if (offset === REGIONS.bar2) memories.add(m);
      return m;
    },
    unmap: (buffer) => {
      // The memory must go while the device is still bound to vfio-pci (its unbind waits for it).
      if (memories.has(buffer)) calls.push(`unmap memory (vfio-pci/unbind: '${readFileSync(join(root, 'sys/bus/pci/drivers/vfio-pci/unbind'), 'utf8')}')`);
      native.unmap(buffer);
    },
    vfioGetApiVersion: () => v.API_VERSION,
    vfioCheckExtension: () => 1,
    vfioGroupGetStatus: () => ({ viable, containerSet: false }),
    vfioGroupSetContainer: () => {},
    vfioSetIommu: () => {},
    vfioGroupGetDeviceFd: () => native.open(join(root, 'regions'), constants.O_RDWR),
    vfioDeviceGetRegionInfo: (_fd, index) => region(index),
    vfioDeviceGetIrqInfo: (_fd, index) => ({ index, flags: 0, count: index === v.PCI_MSIX_IRQ_INDEX ? 2 : 0 }),
    vfioDeviceSetIrqs: (_fd, _index, _start, fds) => void calls.push(`set irqs ${fds.length}`),
  };
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ivshmem-fake-vfio-'));
  fakeTree();
  calls = [];
  viable = true;
  sys = { native: fakeNative(), sysfsRoot: join(root, 'sys'), devRoot: join(root, 'dev'), modprobe: (m) => void calls.push(`modprobe ${m}`) };
});

afterEach(() => rmSync(root, { recursive: true, force: true }));

const text = (path: string): string => readFileSync(join(root, 'sys', path), 'utf8');

describe('openVfio (VFIO ioctls faked, files, fds and mappings real)', () => {
  it('refuses a device held by another driver without bind, touching nothing', () => {
    expect(() => openVfioOn(sys, ADDRESS)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_DEVICE_BUSY', message: expect.stringMatching(/ivshmem-old driver/) }));
    expect(text('bus/pci/drivers/vfio-pci/bind')).toBe('');
    expect(calls).toEqual([]);
  });

  it('binds vfio-pci, turns bus mastering on, wires MSI-X, and on close unmaps the memory once, before giving the device back', () => {
    const fds = openFdCount();
    const dev = openVfioOn(sys, ADDRESS, { bind: true });
    expect(dev.id).toBe(9);
    expect(dev.vectors).toBe(2);
    expect(dev.memory.byteLength).toBe(BAR2_SIZE);
    expect(text(`bus/pci/devices/${ADDRESS}/driver_override`)).toBe('vfio-pci');
    expect(text('bus/pci/drivers/ivshmem-old/unbind')).toBe(ADDRESS);
    expect(text('bus/pci/drivers/vfio-pci/bind')).toBe(ADDRESS);
    expect(readFileSync(join(root, 'regions')).readUInt16LE(4) & 0x6).toBe(0x6);
    expect(calls).toEqual(['open /dev/vfio/vfio', `open /dev/vfio/${GROUP}`, 'set irqs 2']);

    calls.length = 0;
    dev.close();
    // Once, by the device, and before the driver is given back.
    expect(calls).toEqual(["unmap memory (vfio-pci/unbind: '')", 'set irqs 0']);
    expect(text('bus/pci/drivers/vfio-pci/unbind')).toBe(ADDRESS);
    expect(text(`bus/pci/devices/${ADDRESS}/driver_override`)).toBe('\n');
    expect(text('bus/pci/drivers/ivshmem-old/bind')).toBe(ADDRESS);
    expect(dev.memory.byteLength).toBe(0);
    expect(openFdCount()).toBe(fds);
  });

  it('undoes every step when the IOMMU group is not viable', () => {
    const fds = openFdCount();
    viable = false;
    expect(() => openVfioOn(sys, ADDRESS, { bind: true })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_DEVICE_BUSY', message: expect.stringMatching(/not viable.*0000:00:03.0/) }));
    expect(text('bus/pci/drivers/vfio-pci/unbind')).toBe(ADDRESS);
    expect(text('bus/pci/drivers/ivshmem-old/bind')).toBe(ADDRESS);
    expect(openFdCount()).toBe(fds);
  });

  it('loads vfio-pci when its driver is missing, and says so when that fails', () => {
    rmSync(join(root, 'sys/bus/pci/drivers/vfio-pci'), { recursive: true });
    expect(() => openVfioOn(sys, ADDRESS, { bind: true })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_NO_VFIO' }));
    expect(calls).toEqual(['modprobe vfio-pci']);
  });
});
