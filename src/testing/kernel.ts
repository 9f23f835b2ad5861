// The guest kernel: Debian's packaged kernel, fetched with apt-get download rather than
// installed, so nothing on the host changes (installing runs bootloader and initramfs hooks).
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { LabError } from './errors.js';
import { have, run } from './exec.js';

/**
 * The module sets the initramfs loads: 9p and overlay for the root, VFIO for user-space MSI-X,
 * virtio-net for a network link between guests.
 */
export const MODULE_SETS = {
  base: ['virtio', 'virtio_ring', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', '9pnet', '9pnet_virtio', 'netfs', 'fscache', '9p', 'overlay'],
  vfio: ['vfio', 'vfio_iommu_type1', 'vfio_virqfd', 'irqbypass', 'vfio-pci-core', 'vfio-pci'],
  net: ['failover', 'net_failover', 'virtio_net'],
} as const;

/** Every module the initramfs loads, in load order. */
export const MODULES: readonly string[] = [...MODULE_SETS.base, ...MODULE_SETS.vfio, ...MODULE_SETS.net];

/** The modules a prepared image holds, as recorded in its image.json. */
export function modulesKey(modules: readonly string[] = MODULES): string {
  return [...modules].sort().join(',');
}

/** The versioned kernel package the `linux-image-amd64` metapackage depends on. */
export async function kernelPackage(metapackage = 'linux-image-amd64'): Promise<string> {
  let text: string;
  try {
    text = (await run('apt-cache', ['depends', metapackage])).toString();
  } catch (error) {
    throw new LabError(
      `cannot find the guest kernel package: apt-cache depends ${metapackage} failed. On Debian, run \`apt-get update\` first.`,
      { cause: error },
    );
  }
  const match = /Depends:\s*(linux-image-\d\S*)/.exec(text);
  if (!match) {
    throw new LabError(`apt-cache depends ${metapackage} names no linux-image-<version> package (run \`apt-get update\`?):\n${text}`);
  }
  return match[1]!;
}

/** `linux-image-6.1.0-56-amd64` → `6.1.0-56-amd64`. */
export function kernelVersion(pkg: string): string {
  return pkg.replace(/^linux-image-/, '');
}

/** Downloads and unpacks the package into `dir` (boot/ and lib/modules/ end up under it). */
export async function fetchKernel(pkg: string, dir: string): Promise<void> {
  const download = join(dir, 'download');
  await mkdir(download, { recursive: true });
  await run('apt-get', ['download', pkg], { cwd: download });
  const debs = (await readdir(download)).filter((name) => name.endsWith('.deb'));
  if (debs.length !== 1) throw new LabError(`apt-get download ${pkg} left ${debs.length} .deb files in ${download}`);
  await run('dpkg-deb', ['-x', join(download, debs[0]!), join(dir, 'root')]);
  await rm(download, { recursive: true, force: true });
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/**
 * The uncompressed kernel inside a bzImage. QEMU boots that ELF directly through its PVH note,
 * which skips the in-guest decompression: several seconds per boot under TCG.
 */
export async function extractVmlinux(vmlinuz: string): Promise<Buffer> {
  const image = await readFile(vmlinuz);
  const failures: string[] = [];
  for (let at = image.indexOf(XZ_MAGIC); at >= 0; at = image.indexOf(XZ_MAGIC, at + 1)) {
    const stream = image.subarray(at);
    for (const [command, args] of decompressors()) {
      if (!(await have(command))) continue;
      try {
        const elf = await run(command, args, { input: stream });
        if (elf.subarray(0, 4).equals(Buffer.from('\x7fELF', 'latin1'))) return elf;
        failures.push(`${command} at ${at}: not an ELF image`);
      } catch (error) {
        failures.push(`${command} at ${at}: ${(error as Error).message.split('\n')[0]}`);
      }
    }
  }
  throw new LabError(`no XZ-compressed ELF kernel found in ${vmlinuz}:\n  ${failures.join('\n  ') || 'no XZ stream'}`);
}

// --single-stream: the bzImage goes on after the XZ stream, which xz would call garbage.
function decompressors(): Array<[string, string[]]> {
  const python = 'import lzma,sys\nd=lzma.LZMADecompressor(lzma.FORMAT_XZ)\nsys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read()))';
  return [
    ['xz', ['-dc', '--single-stream']],
    ['python3', ['-c', python]],
  ];
}

/**
 * Copies the modules the guest needs, with their dependencies, into `target`
 * (`lib/modules/<version>/…`) and writes a modules.dep for busybox modprobe there.
 */
export async function copyModules(root: string, version: string, target: string, modules: readonly string[] = MODULES): Promise<void> {
  const source = join(root, 'lib', 'modules', version);
  // The .deb ships no modules.dep; the host's kmod cannot read busybox's index, so busybox both
  // writes it here and reads it in the guest.
  await run('busybox', ['depmod', '-b', root, version]);
  const deps = parseModulesDep(await readFile(join(source, 'modules.dep'), 'utf8'));
  const builtin = await readFile(join(source, 'modules.builtin'), 'utf8').catch(() => '');

  const wanted = new Set<string>();
  const visit = (path: string): void => {
    if (wanted.has(path)) return;
    wanted.add(path);
    for (const dep of deps.get(path) ?? []) visit(dep);
  };
  for (const name of modules) {
    const path = [...deps.keys()].find((p) => moduleName(p) === normalize(name));
    if (path) visit(path);
    else if (!builtin.split('\n').some((p) => moduleName(p) === normalize(name))) {
      throw new LabError(`kernel ${version} has no module ${name}`);
    }
  }

  const dest = join(target, 'lib', 'modules', version);
  for (const path of wanted) {
    await mkdir(dirname(join(dest, path)), { recursive: true });
    await copyFile(join(source, path), join(dest, path));
  }
  for (const file of ['modules.builtin', 'modules.order']) {
    await copyFile(join(source, file), join(dest, file)).catch(() => undefined);
  }
  await writeFile(
    join(dest, 'modules.dep'),
    [...wanted].map((path) => `${path}: ${(deps.get(path) ?? []).join(' ')}\n`).join(''),
  );
}

function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    deps.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  return deps;
}

function normalize(name: string): string {
  return name.replace(/-/g, '_');
}

function moduleName(path: string): string {
  return normalize((path.split('/').pop() ?? '').replace(/\.ko(\.\w+)?$/, ''));
}
