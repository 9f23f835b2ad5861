#!/usr/bin/env node
// The `ivshmem` command.
import { IvshmemError } from '../errors.js';
import { benchCommand, benchHelp } from './bench.js';
import { demoCommand, demoHelp } from './demo.js';
import { dumpCommand, dumpHelp } from './dump.js';
import { infoCommand, infoHelp } from './info.js';
import { labCommand, labHelp } from './lab.js';
import { serverCommand, serverHelp } from './server.js';

const commands: Record<string, { run: (argv: string[]) => Promise<number>; summary: string; help: string }> = {
  info: { run: infoCommand, summary: 'list the ivshmem PCI devices of this machine (in a guest)', help: infoHelp },
  server: { run: serverCommand, summary: 'run a QEMU-compatible ivshmem-server', help: serverHelp },
  demo: { run: demoCommand, summary: 'two peers over our server on a shared-memory file (no VM)', help: demoHelp },
  dump: { run: dumpCommand, summary: 'print a bus region: superblock, peers, channels', help: dumpHelp },
  bench: { run: benchCommand, summary: 'measure channels against sockets and MessagePort on this machine', help: benchHelp },
  lab: { run: labCommand, summary: 'boot QEMU guests with ivshmem devices and run scripts in them', help: labHelp },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: ivshmem <command> [options]\n\n${lines.join('\n')}\n\nivshmem <command> --help for its options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const command = commands[name];
  if (!command) {
    console.error(`ivshmem: unknown command '${name}'\n\n${usage()}`);
    return 1;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    // Expected failures (typed) get one clear line; anything else is a defect and keeps its stack.
    if (error instanceof IvshmemError) {
      // Messages of a command's own checks already name it ('ivshmem server: ...').
      console.error(/^ivshmem\b/.test(error.message) ? error.message : `ivshmem: ${error.message}`);
    } else {
      console.error(error);
    }
    process.exitCode = 1;
  },
);
