import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fail } from '../errors.js';

/** An ivshmem PCI function as sysfs describes it (see {@link listDevices}). */
export interface PciDeviceInfo {
  /** PCI address, e.g. `0000:00:03.0`. */
  address: string;
  /** `doorbell` (ivshmem-doorbell: BAR1 with MSI-X, interrupts) or `plain` (memory only). */
  kind: 'doorbell' | 'plain';
  /** Size of the shared memory (BAR2) in bytes. */
  size: number;
  /** PCI revision: 1 on QEMU 2.6 and later. */
  revision: number;
  /** The bound kernel driver (`vfio-pci`, `uio_pci_generic`, …), or null. */
  driver: string | null;
  /** The IOMMU group, or null without an IOMMU (then VFIO cannot be used). */
  iommuGroup: number | null;
  /** MSI-X vectors of a doorbell device, when config space was readable (root); else null. */
  vectors: number | null;
  /** The device's sysfs folder. */
  sysfsPath: string;
}

/** Options of {@link listDevices}. */
export interface ListDevicesOptions {
  /** The sysfs mount point (default `/sys`); tests point it at a fake tree. */
  sysfsRoot?: string;
}

export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;
const PCI_CAP_ID_MSIX = 0x11;

/**
 * Every ivshmem device (PCI 1af4:1110) of this machine, by address. Reads sysfs only: works
 * without root, though `vectors` needs root (config space past 64 bytes is root-only).
 *
 * @example
 * ```ts
 * for (const d of listDevices()) console.log(d.address, d.kind, d.size, d.driver ?? '-');
 * ```
 */
export function listDevices(options: ListDevicesOptions = {}): PciDeviceInfo[] {
  const dir = join(options.sysfsRoot ?? '/sys', 'bus', 'pci', 'devices');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const found: PciDeviceInfo[] = [];
  for (const address of names.sort()) {
    const path = join(dir, address);
    if (readHex(join(path, 'vendor')) !== IVSHMEM_VENDOR || readHex(join(path, 'device')) !== IVSHMEM_DEVICE) continue;
    found.push(describe(address, path));
  }
  return found;
}

/** The sysfs description of one device, or null when no ivshmem device has that address. */
export function findDevice(address: string, options: ListDevicesOptions = {}): PciDeviceInfo | null {
  return listDevices(options).find((d) => d.address === address) ?? null;
}

function describe(address: string, path: string): PciDeviceInfo {
  const bars = readBars(join(path, 'resource'));
  const vectors = msixTableSize(join(path, 'config'));
  return {
    address,
    kind: (bars[1] ?? 0) > 0 || vectors !== null ? 'doorbell' : 'plain',
    size: bars[2] ?? 0,
    revision: readHex(join(path, 'revision')) ?? 0,
    driver: linkName(join(path, 'driver')),
    iommuGroup: numberOrNull(linkName(join(path, 'iommu_group'))),
    vectors,
    sysfsPath: path,
  };
}

function readHex(path: string): number | null {
  try {
    const value = Number.parseInt(readFileSync(path, 'utf8').trim(), 16);
    return Number.isNaN(value) ? null : value;
  } catch {
    return null;
  }
}

function linkName(path: string): string | null {
  try {
    return basename(readlinkSync(path));
  } catch {
    return null;
  }
}

function numberOrNull(text: string | null): number | null {
  if (text === null || !/^\d+$/.test(text)) return null;
  return Number(text);
}

// `resource` has one "start end flags" line per BAR (then ROM and bridge windows); an
// unassigned BAR reads as zeros.
function readBars(path: string): number[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .slice(0, 6)
    .map((line) => {
      // A line the kernel wrote differently than expected is "no BAR", not a failed listing.
      const [a, b] = line.trim().split(/\s+/);
      if (!a || !b || !/^(0x)?[0-9a-f]+$/i.test(a) || !/^(0x)?[0-9a-f]+$/i.test(b)) return 0;
      const start = BigInt(a);
      const end = BigInt(b);
      if ((start === 0n && end === 0n) || end < start) return 0;
      return Number(end - start + 1n);
    });
}

// The MSI-X capability's Message Control holds the table size minus one. Unprivileged reads of
// `config` stop at 64 bytes, before the capabilities: then the answer is "unknown".
function msixTableSize(path: string): number | null {
  let config: Buffer;
  try {
    config = readFileSync(path);
  } catch {
    return null;
  }
  if (config.length < 256) return null;
  const status = config.readUInt16LE(0x06);
  if (!(status & 0x10)) return null;
  let at = config[0x34]! & 0xfc;
  for (let hops = 0; at >= 0x40 && at < 0xff && hops < 48; hops++) {
    if (config[at] === PCI_CAP_ID_MSIX) return (config.readUInt16LE(at + 2) & 0x7ff) + 1;
    at = config[at + 1]! & 0xfc;
  }
  return null;
}

/**
 * The device at `address`, or the only/first ivshmem device when no address is given. Throws
 * `ERR_IVSHMEM_NO_DEVICE` naming the devices that do exist.
 */
export function resolveDevice(address?: string, options: ListDevicesOptions = {}): PciDeviceInfo {
  const devices = listDevices(options);
  const found = address === undefined ? devices[0] : devices.find((d) => d.address === normalizeAddress(address));
  if (found) return found;
  const present = devices.length ? `ivshmem devices here: ${devices.map((d) => `${d.address} (${d.kind})`).join(', ')}` : 'this machine has no ivshmem device (PCI 1af4:1110)';
  fail('ERR_IVSHMEM_NO_DEVICE', `${address === undefined ? 'No ivshmem device found' : `No ivshmem device at ${address}`}: ${present}`);
}

/** `00:03.0` → `0000:00:03.0`: lspci's short form is accepted too. */
export function normalizeAddress(address: string): string {
  return /^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(address) ? `0000:${address.toLowerCase()}` : address.toLowerCase();
}

/** A human-readable table of devices, as `ivshmem info` prints it. */
export function formatDevices(devices: PciDeviceInfo[]): string {
  if (devices.length === 0) return 'No ivshmem devices (PCI 1af4:1110) on this machine.';
  const mib = (n: number): string => (n >= 1 << 20 ? `${n / (1 << 20)} MiB` : `${n / 1024} KiB`);
  const rows = [
    ['ADDRESS', 'KIND', 'MEMORY', 'VECTORS', 'DRIVER', 'IOMMU GROUP'],
    ...devices.map((d) => [
      d.address,
      d.kind,
      mib(d.size),
      d.kind === 'plain' ? '-' : (d.vectors?.toString() ?? '?'),
      d.driver ?? '-',
      d.iommuGroup?.toString() ?? 'none',
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
