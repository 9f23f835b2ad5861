// npm install hook: use a prebuild that loads on this machine, else build from source.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

if (existsSync(dir)) {
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
process.exit(result.status ?? 1);
