// listDevices and the sysfs backend against a fake sysfs tree: regular files stand in for
// config space and BARs, so the register protocol (IVPosition, doorbell word) is checked on
// the host too. Real devices are covered by the lab tests (test/testing/*.qemu.test.ts).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatDevices, listDevices, normalizeAddress, resolveDevice } from '../../src/device/discover.js';
import { openDevice } from '../../src/device/open.js';

let root: string;

interface Fake {
  address: string;
  vendor?: number;
  device?: number;
  bars: Array<[bigint, bigint]>;
  msix?: number;
  driver?: string;
  iommuGroup?: number;
  ivposition?: number;
}

// Config space with a capability list: a vendor capability at 0x40 pointing to MSI-X at 0x50.
function config(fake: Fake): Buffer {
  const c = Buffer.alloc(256);
  c.writeUInt16LE(fake.vendor ?? 0x1af4, 0);
  c.writeUInt16LE(fake.device ?? 0x1110, 2);
  c.writeUInt16LE(0x2, 4); // memory decoding on
  if (fake.msix) {
    c.writeUInt16LE(0x10, 6);
    c[0x34] = 0x40;
    c[0x40] = 0x09;
    c[0x41] = 0x50;
    c[0x50] = 0x11;
    c[0x51] = 0x00;
    c.writeUInt16LE(fake.msix - 1, 0x52);
  }
  return c;
}

function addDevice(fake: Fake): void {
  const dir = join(root, 'bus', 'pci', 'devices', fake.address);
  mkdirSync(dir, { recursive: true });
  const hex = (n: number, width: number): string => `0x${n.toString(16).padStart(width, '0')}\n`;
  writeFileSync(join(dir, 'vendor'), hex(fake.vendor ?? 0x1af4, 4));
  writeFileSync(join(dir, 'device'), hex(fake.device ?? 0x1110, 4));
  writeFileSync(join(dir, 'revision'), hex(1, 2));
  const lines = [];
  for (let i = 0; i < 13; i++) {
    const [start, end] = fake.bars[i] ?? [0n, 0n];
    const flags = start || end ? 0x40200n : 0n;
    lines.push(`0x${start.toString(16).padStart(16, '0')} 0x${end.toString(16).padStart(16, '0')} 0x${flags.toString(16).padStart(16, '0')}`);
  }
  writeFileSync(join(dir, 'resource'), `${lines.join('\n')}\n`);
  writeFileSync(join(dir, 'config'), config(fake));
  const bar0 = Buffer.alloc(256);
  bar0.writeUInt32LE(fake.ivposition ?? 0, 8);
  writeFileSync(join(dir, 'resource0'), bar0);
  const [s2, e2] = fake.bars[2] ?? [0n, 0n];
  writeFileSync(join(dir, 'resource2'), Buffer.alloc(Number(e2 - s2 + 1n)));
  if (fake.driver) {
    mkdirSync(join(root, 'bus', 'pci', 'drivers', fake.driver), { recursive: true });
    symlinkSync(join(root, 'bus', 'pci', 'drivers', fake.driver), join(dir, 'driver'));
  }
  if (fake.iommuGroup !== undefined) {
    mkdirSync(join(root, 'kernel', 'iommu_groups', String(fake.iommuGroup)), { recursive: true });
    symlinkSync(join(root, 'kernel', 'iommu_groups', String(fake.iommuGroup)), join(dir, 'iommu_group'));
  }
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'ivshmem-fake-sysfs-'));
  addDevice({
    address: '0000:00:03.0',
    bars: [[0xfe000000n, 0xfe0000ffn], [0xfe001000n, 0xfe001fffn], [0x800000000n, 0x8000fffffn]],
    msix: 4,
    iommuGroup: 3,
    ivposition: 7,
  });
  addDevice({ address: '0000:00:04.0', bars: [[0xfe002000n, 0xfe0020ffn], [0n, 0n], [0x900000000n, 0x9003fffffn]], driver: 'uio_pci_generic' });
  addDevice({
    address: '0000:00:05.0',
    bars: [[0xfe003000n, 0xfe0030ffn], [0xfe004000n, 0xfe004fffn], [0xa00000000n, 0xa000fffffn]],
    msix: 2,
    iommuGroup: 5,
    driver: 'uio_pci_generic',
  });
  addDevice({ address: '0000:00:01.0', vendor: 0x8086, device: 0x29c0, bars: [] });
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('listDevices', () => {
  it('finds only 1af4:1110 functions, with kind, BAR2 size, driver, IOMMU group and vectors', () => {
    const devices = listDevices({ sysfsRoot: root }).slice(0, 2);
    expect(devices).toEqual([
      {
        address: '0000:00:03.0', kind: 'doorbell', size: 1 << 20, revision: 1, driver: null, iommuGroup: 3, vectors: 4,
        sysfsPath: join(root, 'bus/pci/devices/0000:00:03.0'),
      },
      {
        address: '0000:00:04.0', kind: 'plain', size: 4 << 20, revision: 1, driver: 'uio_pci_generic', iommuGroup: null, vectors: null,
        sysfsPath: join(root, 'bus/pci/devices/0000:00:04.0'),
      },
    ]);
  });

  it('is empty where there is no PCI bus', () => {
    expect(listDevices({ sysfsRoot: join(root, 'nowhere') })).toEqual([]);
  });

  it('resolves addresses, short ones too, and names what exists when one is missing', () => {
    expect(normalizeAddress('00:04.0')).toBe('0000:00:04.0');
    expect(resolveDevice('00:04.0', { sysfsRoot: root }).kind).toBe('plain');
    expect(resolveDevice(undefined, { sysfsRoot: root }).address).toBe('0000:00:03.0');
    expect(() => resolveDevice('0000:00:09.0', { sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_NO_DEVICE', message: expect.stringContaining('0000:00:03.0 (doorbell)') }),
    );
    expect(() => resolveDevice(undefined, { sysfsRoot: join(root, 'nowhere') })).toThrow(/no ivshmem device/);
  });
});

describe('openDevice (sysfs backend, fake BARs)', () => {
  it('reads IVPosition and writes (peer << 16) | vector to the doorbell register', () => {
    const dev = openDevice('0000:00:03.0', { sysfsRoot: root });
    try {
      expect(dev.backend).toBe('sysfs');
      expect(dev.id).toBe(7);
      expect(dev.vectors).toBe(4);
      expect(dev.size).toBe(1 << 20);
      dev.ring(0x1234, 3);
      const bar0 = readFileSync(join(root, 'bus/pci/devices/0000:00:03.0/resource0'));
      expect(bar0.readUInt32LE(12)).toBe(0x12340003);
      dev.ring(0xffff, 0);
      expect(readFileSync(join(root, 'bus/pci/devices/0000:00:03.0/resource0')).readUInt32LE(12)).toBe(0xffff0000);
      expect(() => dev.ring(1, 4)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
      expect(() => dev.ring(0x10000, 0)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
      return expect(dev.waitInterrupt(0)).rejects.toMatchObject({ code: 'ERR_IVSHMEM_NO_INTERRUPTS', message: expect.stringContaining('VFIO') });
    } finally {
      dev.close();
    }
  });

  it('maps the memory shared with the backing file', () => {
    const dev = openDevice('0000:00:04.0', { sysfsRoot: root });
    try {
      new Uint8Array(dev.memory).set([9, 8, 7], 100);
      expect([...readFileSync(join(root, 'bus/pci/devices/0000:00:04.0/resource2')).subarray(100, 103)]).toEqual([9, 8, 7]);
      expect(dev.id).toBe(0);
      expect(() => dev.ring(0, 0)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_NO_DOORBELL', message: expect.stringContaining('ivshmem-plain') }));
    } finally {
      dev.close();
    }
    expect(dev.memory.byteLength).toBe(0);
    expect(() => dev.ring(0, 0)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_CLOSED' }));
  });
});

describe('openDevice (vfio backend refusals)', () => {
  it('refuses a device held by another driver unless asked to bind', () => {
    // 04.0 has no IOMMU group: that refusal comes first and says how to get one.
    expect(() => openDevice('0000:00:04.0', { backend: 'vfio', sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_NO_IOMMU', message: expect.stringMatching(/intel-iommu.*no-IOMMU/s) }),
    );
    expect(() => openDevice('0000:00:03.0', { backend: 'vfio', sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_DEVICE_BUSY', message: expect.stringContaining('not bound to vfio-pci: pass { bind: true }') }),
    );
    expect(() => openDevice('0000:00:05.0', { backend: 'vfio', sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_DEVICE_BUSY', message: expect.stringContaining('held by the uio_pci_generic driver') }),
    );
  });

  it('checks its arguments', () => {
    expect(() => openDevice('0000:00:03.0', { backend: 'uio' as 'vfio', sysfsRoot: root })).toThrow(
      expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }),
    );
    expect(() => openDevice('', { sysfsRoot: root })).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_INVALID_ARGUMENT' }));
  });
});

describe('formatDevices', () => {
  it('prints a table, with "?" for vectors unknown without root', () => {
    const table = formatDevices(listDevices({ sysfsRoot: root }).slice(0, 2).map((d, i) => (i === 0 ? { ...d, vectors: null } : d)));
    expect(table.split('\n')).toEqual([
      'ADDRESS       KIND      MEMORY  VECTORS  DRIVER           IOMMU GROUP',
      '0000:00:03.0  doorbell  1 MiB   ?        -                3',
      '0000:00:04.0  plain     4 MiB   -        uio_pci_generic  none',
    ]);
    expect(formatDevices([])).toMatch(/No ivshmem devices/);
  });
});
