// The sysfs backend with its system calls injected: the addon's real calls, recorded, over a
// fake sysfs tree of regular files (mmap on them is real).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { native } from '../../src/native.js';
import { openSysfsOn, type SysfsNative } from '../../src/device/sysfs.js';

const ADDRESS = '0000:00:04.0';
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ivshmem-fake-sysfs-'));
  const dir = join(root, 'bus/pci/devices', ADDRESS);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vendor'), '0x1af4\n');
  writeFileSync(join(dir, 'device'), '0x1110\n');
  writeFileSync(join(dir, 'resource'), '0xfe000000 0xfe0000ff 0x40200\n0xfe001000 0xfe001fff 0x40200\n0x800000000 0x800003fff 0x40200\n');
  const config = Buffer.alloc(64); // memory decoding off: the backend turns it on
  writeFileSync(join(dir, 'config'), config);
  writeFileSync(join(dir, 'enable'), '');
  const bar0 = Buffer.alloc(256);
  bar0.writeUInt32LE(3, 8);
  writeFileSync(join(dir, 'resource0'), bar0);
  writeFileSync(join(dir, 'resource2'), Buffer.alloc(16384));
});

afterEach(() => rmSync(root, { recursive: true, force: true }));

it('maps BAR0 and BAR2, rings through the doorbell register, and unmaps each mapping once', () => {
  const calls: string[] = [];
  const recorded: SysfsNative = {
    ...native,
    map: (fd, offset, length, writable, path) => {
      calls.push(`map ${path!.split('/').pop()}`);
      return native.map(fd, offset, length, writable, path);
    },
    unmap: (buffer) => {
      calls.push(`unmap ${buffer.byteLength}`);
      native.unmap(buffer);
    },
    write32: (registers, offset, value) => {
      calls.push(`write32 ${offset} 0x${value.toString(16)}`);
      native.write32(registers, offset, value);
    },
  };
  const dev = openSysfsOn({ native: recorded, sysfsRoot: root }, ADDRESS);
  expect(readFileSync(join(root, 'bus/pci/devices', ADDRESS, 'enable'), 'utf8')).toBe('1');
  expect(dev.id).toBe(3);
  dev.ring(2, 0);
  dev.close();
  expect(calls).toEqual(['map resource0', 'map resource2', 'write32 12 0x20000', 'unmap 16384', 'unmap 256']);
  expect(readFileSync(join(root, 'bus/pci/devices', ADDRESS, 'resource0')).readUInt32LE(12)).toBe(0x20000);
});
