#!/usr/bin/env node
// Builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer into build-sanitized/,
// apart from the normal build. Prints the addon's path. Skips the build when binding.gyp and
// native/ have not changed since the last one (a stamp holds their hash).
//
// Node itself is not instrumented, so the runtime is preloaded; see sanitizerEnv() for the
// environment a process needs to load this addon.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build-sanitized');
const addon = join(out, 'build', 'Release', 'ivshmem.node');
const stamp = join(out, 'stamp');
const flags = '-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1';

function sourceHash() {
  const hash = createHash('sha256').update(flags).update(readFileSync(join(root, 'binding.gyp')));
  for (const name of readdirSync(join(root, 'native')).sort()) {
    hash.update(name).update(readFileSync(join(root, 'native', name)));
  }
  return hash.digest('hex');
}

/** The shared runtime library of a sanitizer, as the compiler that built the addon knows it. */
function runtime(name) {
  const r = spawnSync('g++', [`-print-file-name=lib${name}.so`], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || !path.startsWith('/') || !existsSync(path)) {
    throw new Error(`lib${name}.so not found by g++ (install g++, which brings it)`);
  }
  return path;
}

/** Environment for a process that loads the sanitized addon. */
export function sanitizerEnv(base = process.env) {
  return {
    ...base,
    IVSHMEM_ADDON: addon,
    LD_PRELOAD: [runtime('asan'), runtime('ubsan'), base.LD_PRELOAD].filter(Boolean).join(':'),
    // Node (not instrumented) keeps memory until exit by design: leaks are not what this hunts.
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=0:exitcode=66:halt_on_error=1',
    UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1:exitcode=67',
  };
}

export function buildSanitized() {
  const hash = sourceHash();
  if (existsSync(addon) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) return addon;
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  cpSync(join(root, 'binding.gyp'), join(out, 'binding.gyp'));
  cpSync(join(root, 'native'), join(out, 'native'), { recursive: true });
  const nodeGyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  const args = [nodeGyp, 'rebuild', '--jobs', '2'];
  // Headers of the running Node when it ships them (a distribution's nodejs package), as npm
  // passes them for the normal build; otherwise node-gyp's own download.
  const prefix = dirname(dirname(process.execPath));
  if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node.h'))) args.push(`--nodedir=${prefix}`);
  const r = spawnSync(process.execPath, args, {
    cwd: out,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CFLAGS: flags, CXXFLAGS: flags, LDFLAGS: '-fsanitize=address,undefined' },
  });
  if (r.status !== 0) throw new Error(`node-gyp failed building the sanitized addon (status ${r.status})`);
  writeFileSync(stamp, hash);
  return addon;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(buildSanitized());
}
