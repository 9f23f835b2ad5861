// npm install hook: use a prebuild that loads on this machine, else build from source.
// `--build-from-source` (npm_config_build_from_source, as node-pre-gyp and prebuild-install read
// it) skips the prebuilds; the local build/Release it makes then wins in the loader.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const fromSource = ['true', 'ivshmem'].includes(process.env.npm_config_build_from_source ?? '');

if (!fromSource && existsSync(dir)) {
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.node'))) {
    try {
      require(join(dir, name));
      process.exit(0);
    } catch {
      // Not loadable here (another libc or ABI): try the next, then build.
    }
  }
}

// npm puts its bundled node-gyp on this variable for install scripts.
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
if (result.error) console.error(`ivshmem: could not run node-gyp to build the addon: ${result.error.message}`);
process.exit(result.status ?? 1);
