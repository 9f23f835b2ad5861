#!/usr/bin/env node
// Builds the addon's prebuilds for Linux glibc on x64 and arm64 (or the architectures named on the
// command line) into prebuilds/linux-<arch>/ivshmem.glibc.node, which `npm pack` ships. Another
// architecture than this machine's is cross-compiled with Debian's cross compiler, installed with
// apt-get when it is missing. Each build runs in a temporary copy of the sources, so the
// developer's build/Release is left alone.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** Per Node architecture: the GNU triplet of its toolchain and its ELF e_machine number. */
const targets = {
  x64: { triplet: 'x86_64-linux-gnu', debianPackage: 'g++-x86-64-linux-gnu', machine: 62 },
  arm64: { triplet: 'aarch64-linux-gnu', debianPackage: 'g++-aarch64-linux-gnu', machine: 183 },
};

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (result.error) throw new Error(`prebuild: ${cmd}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`prebuild: ${cmd} ${args.join(' ')} exited with ${result.status ?? result.signal}`);
}

function onPath(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** The compiler, linker and strip for `arch`: the native ones, or the Debian cross toolchain. */
function toolchain(arch) {
  const target = targets[arch];
  if (arch === process.arch) return { cc: 'gcc', cxx: 'g++', strip: 'strip' };
  const prefix = `${target.triplet}-`;
  if (!onPath(`${prefix}g++`)) {
    console.log(`prebuild: installing ${target.debianPackage} (the ${arch} cross compiler) with apt-get`);
    const [cmd, ...pre] = process.getuid?.() === 0 ? ['apt-get'] : ['sudo', 'apt-get'];
    const apt = (...args) => run(cmd, [...pre, ...args], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    try {
      apt('install', '-y', '-qq', target.debianPackage);
    } catch {
      apt('update', '-qq');
      apt('install', '-y', '-qq', target.debianPackage);
    }
  }
  return { cc: `${prefix}gcc`, cxx: `${prefix}g++`, strip: `${prefix}strip` };
}

/** node-gyp's own downloads need the internet; the headers of an installed Node do not. */
function nodeHeadersDir() {
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  return require.resolve('node-gyp/bin/node-gyp.js');
}

function build(arch) {
  if (!targets[arch]) throw new Error(`prebuild: no target for architecture '${arch}' (known: ${Object.keys(targets).join(', ')})`);
  const tools = toolchain(arch);
  const work = mkdtempSync(join(tmpdir(), `ivshmem-prebuild-${arch}-`));
  try {
    copyFileSync(join(root, 'binding.gyp'), join(work, 'binding.gyp'));
    cpSync(join(root, 'native'), join(work, 'native'), { recursive: true });
    // binding.gyp asks node-addon-api for its include folder, resolved from the build folder.
    symlinkSync(join(root, 'node_modules'), join(work, 'node_modules'));
    const headers = nodeHeadersDir();
    const args = [nodeGyp(), 'rebuild', `--arch=${arch}`, ...(headers ? [`--nodedir=${headers}`] : [])];
    const env = { ...process.env, CC: tools.cc, CXX: tools.cxx, LINK: tools.cxx, CC_host: 'gcc', CXX_host: 'g++' };
    console.log(`prebuild: linux-${arch} with ${tools.cxx}`);
    run(process.execPath, args, { cwd: work, env });
    const built = join(work, 'build', 'Release', 'ivshmem.node');
    run(tools.strip, ['--strip-unneeded', built]);
    const machine = readFileSync(built).readUInt16LE(18);
    if (machine !== targets[arch].machine) throw new Error(`prebuild: ${built} is for ELF machine ${machine}, not ${arch}`);
    // Copied beside, then renamed: a process loading or packing the prebuild never sees half a file.
    const out = join(root, 'prebuilds', `linux-${arch}`);
    mkdirSync(out, { recursive: true });
    const file = join(out, 'ivshmem.glibc.node');
    copyFileSync(built, `${file}.${process.pid}.tmp`);
    renameSync(`${file}.${process.pid}.tmp`, file);
    console.log(`prebuild: wrote ${file}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const arches = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(targets);
try {
  for (const arch of arches) build(arch);
} catch (error) {
  console.error(error.message);
  process.exitCode = 1;
}
