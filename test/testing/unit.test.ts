// The lab's pieces that need no guest: QEMU command lines, the initramfs archive, argument
// checks, and the accelerator rule.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { detectAccel } from '../../src/testing/accel.js';
import { deviceAddress, qemuArgs, type BootSpec } from '../../src/testing/guest.js';
import { buildInitramfs, initramfsKey } from '../../src/testing/initramfs.js';
import { kernelVersion, MODULE_SETS, MODULES, modulesKey } from '../../src/testing/kernel.js';
import { detectNetBackend, freePort, guestMac, netListening } from '../../src/testing/net.js';
import { startLab } from '../../src/testing/lab.js';
import { imageIsCurrent, type LabImage } from '../../src/testing/prepare.js';

const scratch = mkdtempSync(join(tmpdir(), 'ivshmem-lab-unit-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const image: LabImage = { version: '6.1.0-99-amd64', dir: scratch, kernel: join(scratch, 'vmlinux'), initrd: join(scratch, 'initrd.gz'), modules: [] };

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
    // Without it a starved vCPU fails the IO-APIC timer check and, with remapping, panics.
    expect(args[args.indexOf('-append') + 1]).toContain(' no_timer_check ');
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

  it('wires a network link: stream over a Unix socket, listen or connect, with the address for /init', () => {
    const net = { link: 'l', backend: 'stream', role: 'listen', endpoint: '/tmp/lab/net-l.sock', address: '10.0.0.1/24', mac: guestMac(0) } as const;
    const listen = qemuArgs(spec({ net }));
    expect(listen[listen.indexOf('-netdev') + 1]).toBe('stream,id=net0,server=on,addr.type=unix,addr.path=/tmp/lab/net-l.sock');
    expect(listen[listen.indexOf('-netdev') + 3]).toBe('virtio-net-pci,netdev=net0,mac=52:54:00:1a:00:00,addr=0f');
    expect(listen[listen.indexOf('-append') + 1]).toContain(' labnet=10.0.0.1/24');
    const connect = qemuArgs(spec({ net: { ...net, role: 'connect', address: '10.0.0.2/24', mac: guestMac(1) } }));
    expect(connect[connect.indexOf('-netdev') + 1]).toBe('stream,id=net0,server=off,addr.type=unix,addr.path=/tmp/lab/net-l.sock');
    expect(connect.join(' ')).toContain('mac=52:54:00:1a:00:01');
  });

  it('wires a network link over loopback TCP where QEMU has no -netdev stream', () => {
    const net = { link: 'l', backend: 'socket', role: 'listen', endpoint: '40000', address: '10.0.0.1/24', mac: guestMac(0) } as const;
    expect(qemuArgs(spec({ net })).join(' ')).toContain('-netdev socket,id=net0,listen=127.0.0.1:40000 -device virtio-net-pci');
    expect(qemuArgs(spec({ net: { ...net, role: 'connect' } })).join(' ')).toContain('-netdev socket,id=net0,connect=127.0.0.1:40000 ');
  });

  it('has no network device or labnet= without a link', () => {
    const args = qemuArgs(spec());
    expect(args).not.toContain('-netdev');
    expect(args[args.indexOf('-append') + 1]).not.toContain('labnet');
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

  it('loads virtio_net and configures eth0 from labnet= before the job', async () => {
    expect(MODULES).toEqual(expect.arrayContaining(['virtio_net', 'net_failover', 'failover', 'vfio-pci', '9p']));
    const init = unpack(gunzipSync(await buildInitramfs('/bin/busybox', join(scratch, 'modules')))).get('init')!.data.toString();
    expect(init).toMatch(/modprobe -a .*\bvirtio_net\b/);
    expect(init).toContain('ip addr add "$labnet" dev eth0 && ip link set eth0 up');
    expect(init.indexOf('labnet')).toBeLessThan(init.indexOf('chroot'));
  });

  it('refuses a dynamically linked busybox', async () => {
    await expect(buildInitramfs(process.execPath, join(scratch, 'modules'))).rejects.toThrow(/busybox-static/);
  });

  it('is keyed on its contents', () => {
    expect(initramfsKey()).toMatch(/^[0-9a-f]{12}$/);
    expect(initramfsKey()).toBe(initramfsKey());
    // An image whose modules were brought up to date gets a new archive.
    expect(initramfsKey(modulesKey())).not.toBe(initramfsKey(''));
  });

  it('knows an image prepared before the network modules as out of date', () => {
    expect(imageIsCurrent({ ...image, modules: [] })).toBe(false);
    expect(imageIsCurrent({ ...image, modules: modulesKey([...MODULE_SETS.base, ...MODULE_SETS.vfio]).split(',') })).toBe(false);
    expect(imageIsCurrent({ ...image, modules: modulesKey().split(',') })).toBe(true);
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

  it('refuses network links it cannot wire, before booting', async () => {
    await expect(startLab({ image, guests: [{ net: { address: '10.0.0.1' } }] })).rejects.toThrow(/net.address must be an IPv4 address with a prefix/);
    await expect(startLab({ image, guests: [{ net: { address: '10.0.0.300/24' } }] })).rejects.toThrow(/like 10.0.0.1\/24; got "10.0.0.300\/24"/);
    await expect(startLab({ image, guests: [{ net: { address: '10.0.0.1/24', link: 'a b' } }] })).rejects.toThrow(/net.link must be/);
    await expect(
      startLab({ image, guests: [{ net: { address: '10.0.0.1/24' } }, { net: { address: '10.0.0.2/24' } }, { net: { address: '10.0.0.3/24' } }] }),
    ).rejects.toThrow(/link default joins only two guests; guest0, guest1, guest2 name it/);
    await expect(startLab({ image, guests: [{ net: { address: '10.0.0.1/24' } }, { net: { address: '10.0.0.1/24' } }] })).rejects.toThrow(
      /guest0 and guest1 have the same address/,
    );
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

describe('network helpers', () => {
  it('finds -netdev stream in this QEMU (7.2+)', () => {
    expect(detectNetBackend()).toBe('stream');
  });

  it('gives each guest its own MAC', () => {
    expect(new Set([0, 1, 2, 255, 256].map(guestMac)).size).toBe(5);
    expect(guestMac(258)).toBe('52:54:00:1a:01:02');
  });

  it('sees a link listen: a Unix socket that exists, a TCP port in LISTEN on 127.0.0.1', async () => {
    const path = join(scratch, 'net.sock');
    const base = { link: 'l', role: 'listen', address: '10.0.0.1/24', mac: guestMac(0) } as const;
    expect(netListening({ ...base, backend: 'stream', endpoint: path })).toBe(false);
    const unix = createServer().listen(path);
    await once(unix, 'listening');
    expect(netListening({ ...base, backend: 'stream', endpoint: path })).toBe(true);
    unix.close();
    const port = await freePort();
    expect(netListening({ ...base, backend: 'socket', endpoint: String(port) })).toBe(false);
    const tcp = createServer().listen(port, '127.0.0.1');
    await once(tcp, 'listening');
    try {
      expect(netListening({ ...base, backend: 'socket', endpoint: String(port) })).toBe(true);
    } finally {
      tcp.close();
    }
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
