// The lab's pieces that need no guest: QEMU command lines, the initramfs archive, argument
// checks, and the accelerator rule.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { detectAccel } from '../../src/testing/accel.js';
import { deviceAddress, qemuArgs, type BootSpec } from '../../src/testing/guest.js';
import { buildInitramfs, initramfsKey } from '../../src/testing/initramfs.js';
import { kernelVersion } from '../../src/testing/kernel.js';
import { startLab } from '../../src/testing/lab.js';
import type { LabImage } from '../../src/testing/prepare.js';

const scratch = mkdtempSync(join(tmpdir(), 'ivshmem-lab-unit-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const image: LabImage = { version: '6.1.0-99-amd64', dir: scratch, kernel: join(scratch, 'vmlinux'), initrd: join(scratch, 'initrd.gz') };

function spec(overrides: Partial<BootSpec> = {}): BootSpec {
  return {
    name: 'g',
    image,
    accel: 'tcg',
    memoryMb: 512,
    iommu: true,
    jobDir: '/tmp/lab/g-1',
    devices: [
      { kind: 'doorbell', address: deviceAddress(0), server: 'default', socket: '/tmp/lab/default.sock', vectors: 4 },
      { kind: 'plain', address: deviceAddress(1), shm: 'p', path: '/dev/shm/x', size: 1 << 20 },
    ],
    ...overrides,
  };
}

describe('qemuArgs', () => {
  it('puts the vIOMMU before the devices, with split irqchip and intel_iommu=on', () => {
    const args = qemuArgs(spec());
    const joined = args.join(' ');
    expect(args[args.indexOf('-M') + 1]).toBe('q35,kernel-irqchip=split');
    expect(args[args.indexOf('-append') + 1]).toMatch(/labjob=\/tmp\/lab\/g-1 .*intel_iommu=on/);
    expect(args.indexOf('intel-iommu,intremap=on')).toBeLessThan(args.findIndex((a) => a.startsWith('ivshmem-doorbell')));
    expect(joined).toContain('-chardev socket,path=/tmp/lab/default.sock,id=ivc0');
    expect(joined).toContain('ivshmem-doorbell,chardev=ivc0,vectors=4,addr=10');
    expect(joined).toContain('memory-backend-file,id=ivm1,share=on,mem-path=/dev/shm/x,size=1048576');
    expect(joined).toContain('ivshmem-plain,memdev=ivm1,addr=11');
    expect(args[args.indexOf('-accel') + 1]).toBe('tcg');
    expect(args[args.indexOf('-cpu') + 1]).toBe('max');
  });

  it('leaves the IOMMU out when not asked for', () => {
    const args = qemuArgs(spec({ iommu: false, accel: 'kvm' }));
    expect(args[args.indexOf('-M') + 1]).toBe('q35');
    expect(args.join(' ')).not.toContain('iommu');
    expect(args[args.indexOf('-cpu') + 1]).toBe('host');
  });

  it('gives devices addresses from slot 0x10', () => {
    expect(deviceAddress(0)).toBe('0000:00:10.0');
    expect(deviceAddress(15)).toBe('0000:00:1f.0');
  });
});

// Parses a newc archive back into name → { mode, rdev, data }.
function unpack(archive: Buffer): Map<string, { mode: number; rdev: [number, number]; data: Buffer }> {
  const entries = new Map<string, { mode: number; rdev: [number, number]; data: Buffer }>();
  let at = 0;
  const align = (n: number): number => (n + 3) & ~3;
  for (;;) {
    expect(archive.toString('latin1', at, at + 6)).toBe('070701');
    const field = (i: number): number => Number.parseInt(archive.toString('latin1', at + 6 + i * 8, at + 14 + i * 8), 16);
    const [mode, size, rdevMajor, rdevMinor, nameSize] = [field(1), field(6), field(9), field(10), field(11)];
    const name = archive.toString('latin1', at + 110, at + 110 + nameSize - 1);
    const dataAt = align(at + 110 + nameSize);
    if (name === 'TRAILER!!!') return entries;
    entries.set(name, { mode, rdev: [rdevMajor, rdevMinor], data: archive.subarray(dataAt, dataAt + size) });
    at = align(dataAt + size);
  }
}

describe('initramfs', () => {
  it('holds /init, a static busybox, /dev/console and the modules tree', async () => {
    const modules = join(scratch, 'modules');
    mkdirSync(join(modules, 'lib', 'modules', '6.1.0-99-amd64', 'kernel', 'fs'), { recursive: true });
    writeFileSync(join(modules, 'lib', 'modules', '6.1.0-99-amd64', 'kernel', 'fs', '9p.ko'), 'module');
    writeFileSync(join(modules, 'lib', 'modules', '6.1.0-99-amd64', 'modules.dep'), 'kernel/fs/9p.ko:\n');
    const entries = unpack(gunzipSync(await buildInitramfs('/bin/busybox', modules)));
    expect(entries.get('init')!.mode).toBe(0o100755);
    expect(entries.get('init')!.data.toString()).toMatch(/^#!\/bin\/busybox sh\n/);
    expect(entries.get('init')!.data.toString()).toContain('poweroff -f');
    expect(entries.get('dev/console')).toMatchObject({ mode: 0o020600, rdev: [5, 1] });
    expect(entries.get('bin/busybox')!.data.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(entries.get('lib/modules/6.1.0-99-amd64/kernel/fs/9p.ko')!.data.toString()).toBe('module');
    expect(entries.get('lib/modules/6.1.0-99-amd64/modules.dep')!.data.toString()).toBe('kernel/fs/9p.ko:\n');
  });

  it('refuses a dynamically linked busybox', async () => {
    await expect(buildInitramfs(process.execPath, join(scratch, 'modules'))).rejects.toThrow(/busybox-static/);
  });

  it('is keyed on its contents', () => {
    expect(initramfsKey()).toMatch(/^[0-9a-f]{12}$/);
    expect(initramfsKey()).toBe(initramfsKey());
  });
});

describe('startLab checks', () => {
  it('refuses a doorbell device with fewer vectors than its server gives, before booting', async () => {
    await expect(
      startLab({ image, servers: { default: { vectors: 4 } }, guests: [{ devices: [{ kind: 'doorbell', vectors: 2 }] }] }),
    ).rejects.toThrow(/2 vectors cannot join server default, which gives every peer 4/);
  });

  it('refuses plain memory whose size is not a power of two', async () => {
    await expect(startLab({ image, guests: [{ devices: [{ kind: 'plain', size: 3000 }] }] })).rejects.toThrow(/power of two/);
  });

  it('refuses two guests with one name', async () => {
    await expect(startLab({ image, guests: [{ name: 'x' }, { name: 'x' }] })).rejects.toThrow(/two lab guests are named x/);
  });

  it('sizes a server for its devices and cleans up on close', async () => {
    const lab = await startLab({ image, guests: [{ name: 'x', devices: [{ kind: 'doorbell', vectors: 3 }, { kind: 'plain' }] }] });
    const server = lab.server();
    expect(server.vectors).toBe(3);
    expect(existsSync(lab.shmPath())).toBe(true);
    await expect(lab.run({ nobody: { script: 'x.mjs' } })).rejects.toThrow(/no lab guest named nobody/);
    const paths = [lab.dir, lab.socketPath(), lab.shmPath(), server.shmPath];
    await lab.close();
    for (const path of paths) expect(existsSync(path), path).toBe(false);
    await expect(lab.run({ x: { script: 'x.mjs' } })).rejects.toThrow(/closed/);
  });
});

describe('helpers', () => {
  it('reads the kernel version from the package name', () => {
    expect(kernelVersion('linux-image-6.1.0-56-amd64')).toBe('6.1.0-56-amd64');
  });

  it('picks TCG unless KVM really works', () => {
    const accel = detectAccel();
    expect(['kvm', 'tcg']).toContain(accel);
    if (existsSync('/sys/module/kvm_pvm')) expect(accel).toBe('tcg');
  });
});
