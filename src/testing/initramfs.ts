// The guest's initramfs: busybox, the modules from kernel.ts and an /init that turns the host's
// own root (9p, read-only, with a tmpfs overlay) into the guest's root and runs one job in it.
// The cpio archive is written here rather than with `cpio`, so /dev/console can be a device
// node without root rights on the host.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { LabError } from './errors.js';
import { MODULES } from './kernel.js';

/** The job folder's files, shared by /init (guest) and the runner (host). */
export const JOB_FILES = { script: 'run.sh', stdout: 'stdout', stderr: 'stderr', exit: 'exit' } as const;

/** Marks lines /init writes to the console, so a failure report can find them. */
export const INIT_TAG = 'ivshmem-lab:';

// The kernel hands unknown `name=value` parameters to /init as environment variables: that is
// how the job folder's path (the same path on host and guest) arrives.
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1
say() { echo "${INIT_TAG} $*"; }
die() { say "FAILED: $*"; sync; poweroff -f; sleep 10; }
modprobe -a ${MODULES.join(' ')} || say "some modules did not load"
ip link set lo up
# labnet=ADDRESS/PREFIX: the guest's end of a point-to-point virtio-net link (one NIC, eth0).
if [ -n "$labnet" ]; then
  ip addr add "$labnet" dev eth0 && ip link set eth0 up || die "cannot give eth0 the address $labnet (is virtio_net in the image? run ivshmem lab prepare)"
fi
job="$labjob"
[ -n "$job" ] || die "no labjob= on the kernel command line"
mkdir -p /host /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || die "mount hostroot"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work overlay /newroot || die "mount overlay"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job "/newroot$job" || die "mount job"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
say "job start"
chroot /newroot /bin/sh "$job/${JOB_FILES.script}" <"/dev/null" >"/newroot$job/${JOB_FILES.stdout}" 2>"/newroot$job/${JOB_FILES.stderr}"
echo $? >"/newroot$job/${JOB_FILES.exit}"
sync
say "job end"
poweroff -f
`;

interface Entry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

/**
 * A key for the initramfs contents we generate: a changed /init, or modules added to the image
 * (`imageModules`, what its image.json records), means a new archive.
 */
export function initramfsKey(imageModules = ''): string {
  return createHash('sha256').update(INIT).update(MODULES.join(',')).update(`\0${imageModules}`).digest('hex').slice(0, 12);
}

/** Builds the gzip-compressed newc archive from busybox and a modules tree (`lib/modules/…`). */
export async function buildInitramfs(busybox: string, modulesRoot: string): Promise<Buffer> {
  const box = await readFile(busybox);
  if (isDynamic(box)) {
    throw new LabError(`${busybox} is dynamically linked; the guest has no libc in its initramfs. Install busybox-static.`);
  }
  const entries: Entry[] = [];
  for (const dir of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'lib', 'lib/modules']) {
    entries.push({ name: dir, mode: S_IFDIR | 0o755 });
  }
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] });
  entries.push({ name: 'bin/busybox', mode: S_IFREG | 0o755, data: box });
  entries.push({ name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(INIT) });
  await addTree(entries, join(modulesRoot, 'lib', 'modules'), 'lib/modules');
  return gzipSync(cpio(entries), { level: 6 });
}

async function addTree(entries: Entry[], dir: string, prefix: string): Promise<void> {
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const target = `${prefix}/${name}`;
    if ((await stat(path)).isDirectory()) {
      entries.push({ name: target, mode: S_IFDIR | 0o755 });
      await addTree(entries, path, target);
    } else {
      entries.push({ name: target, mode: S_IFREG | 0o644, data: await readFile(path) });
    }
  }
}

// The "newc" format the kernel unpacks: ASCII-hex headers, names and data padded to 4 bytes.
function cpio(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (buffer: Buffer): void => {
    parts.push(buffer);
    size += buffer.length;
  };
  const pad = (): void => {
    if (size % 4) push(Buffer.alloc(4 - (size % 4)));
  };
  const write = (entry: Entry, ino: number): void => {
    const data = entry.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${entry.name}\0`);
    const fields = [
      ino, entry.mode, 0, 0, entry.mode & S_IFDIR ? 2 : 1, 0, data.length,
      0, 0, entry.rdev?.[0] ?? 0, entry.rdev?.[1] ?? 0, name.length, 0,
    ];
    push(Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'latin1'));
    push(name);
    pad();
    push(data);
    pad();
  };
  entries.forEach((entry, i) => write(entry, i + 1));
  write({ name: 'TRAILER!!!', mode: 0 }, 0);
  return Buffer.concat(parts, size);
}

// A static binary has no PT_INTERP program header.
function isDynamic(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 <= elf.length && elf.readUInt32LE(at) === 3) return true;
  }
  return false;
}
