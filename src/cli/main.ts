#!/usr/bin/env node
// The `ivshmem` command.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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

/** What the exit status means, for every command. */
const exitCodes = `Exit status:
  0   done
  1   failed: the message says what and what to do (bad flags included)
  2   ivshmem dump: the memory holds no ready bus region; ivshmem lab status: something is missing
  N   ivshmem lab run: the highest exit status of the guests' scripts
  70  an internal error (a defect: please report it; IVSHMEM_DEBUG=1 prints its stack)`;

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: ivshmem <command> [options]\n\n${lines.join('\n')}\n\nivshmem <command> --help for its options; ivshmem --version for the version.\n\n${exitCodes}`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    console.log(version());
    return 0;
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
    // Expected failures (typed, or a system call's) get one clear line; anything else is a
    // defect: one line too, its stack only on request.
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof IvshmemError || (error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === 'string')) {
      // Messages of a command's own checks already name it ('ivshmem server: ...').
      console.error(/^ivshmem\b/.test(message) ? message : `ivshmem: ${message}`);
      process.exitCode = 1;
    } else {
      console.error(`ivshmem: internal error: ${message.split('\n')[0]}`);
      if (process.env.IVSHMEM_DEBUG) console.error(error);
      else console.error('(a defect in ivshmem: please report it; IVSHMEM_DEBUG=1 prints the stack)');
      process.exitCode = 70;
    }
  },
);
