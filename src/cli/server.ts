import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IvshmemServer } from '../server/index.js';
import { fail } from '../errors.js';
import { flagHelp, intFlag, parseArgs, parseSize, type FlagSpec } from './args.js';

const specs: FlagSpec[] = [
  { short: 'S', long: 'socket', value: true, help: 'UNIX socket path (default /tmp/ivshmem_socket)' },
  { short: 'l', long: 'size', value: true, help: 'shared memory size, K/M/G suffixes, rounded up to a power of two (default 4M)' },
  { short: 'n', long: 'vectors', value: true, help: 'interrupt vectors per peer, 1..64 (default 1)' },
  { short: 'M', long: 'shm', value: true, help: 'shared memory name: /dev/shm/NAME, or a path (default: a new file in /dev/shm)' },
  { short: 'm', long: 'dir', value: true, help: 'create the shared memory file in this directory (e.g. a hugetlbfs mount)' },
  { long: 'reuse-shm', value: false, help: 'keep the contents of an existing shared memory file' },
  { long: 'keep-shm', value: false, help: 'leave the shared memory file in place on exit' },
  { long: 'max-peers', value: true, help: 'peers served at once, 1..65536 (default 65536)' },
  { long: 'mode', value: true, help: 'permission bits of the socket and a created -M/-m file, octal (default 600: this user only)' },
  { short: 'p', long: 'pidfile', value: true, help: 'write the process ID to this file' },
  { short: 'F', long: 'foreground', value: false, help: 'accepted for QEMU compatibility: the server always runs in the foreground' },
  { short: 'v', long: 'verbose', value: false, help: 'also print the peer table after each change' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const serverHelp = `ivshmem server [options]: a QEMU-compatible ivshmem-server

QEMU connects with: -chardev socket,path=SOCKET,id=c0 -device ivshmem-doorbell,chardev=c0,vectors=N
Host programs connect with connect(SOCKET) from the ivshmem package (with -M/-m, whose memory\ncannot be sealed, connect(SOCKET, { sealedMemory: 'warn' }): only among peers that trust each other).

${flagHelp(specs)}`;

function shmPath(flags: Record<string, string | true>): string | undefined {
  const name = flags.shm as string | undefined;
  const dir = flags.dir as string | undefined;
  if (name && dir) fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'ivshmem server: give either -M/--shm or -m/--dir, not both');
  if (dir) return join(dir, `ivshmem-${process.pid}`);
  if (!name) return undefined;
  return name.includes('/') ? name : `/dev/shm/${name}`;
}

// '660', '0660', '0o660' → 0o660; anything else is refused here, as typed and named as the flag.
function octalMode(text: string): number {
  if (!/^(0o?)?[0-7]{1,4}$/.test(text)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem server: --mode must be octal permission bits 0..7777 (e.g. 600, 0660), got '${text}'`);
  }
  return parseInt(text.replace(/^0o?/, '') || '0', 8);
}

function stamp(): string {
  return new Date().toISOString().replace('T', ' ').slice(0, 23);
}

/** `ivshmem server`: runs until SIGINT or SIGTERM. */
export async function serverCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, specs, 'server');
  if (flags.help) {
    console.log(serverHelp);
    return 0;
  }
  const vectors = intFlag(flags, 'vectors', 'server', { min: 1, max: 64, fallback: 1 });
  const server = await IvshmemServer.listen({
    socket: (flags.socket as string | undefined) ?? '/tmp/ivshmem_socket',
    size: flags.size === undefined ? undefined : parseSize(flags.size as string),
    vectors,
    shm: shmPath(flags),
    reuseShm: flags['reuse-shm'] === true,
    keepShm: flags['keep-shm'] === true,
    maxPeers: intFlag(flags, 'max-peers', 'server', { min: 1, max: 65536 }),
    mode: flags.mode === undefined ? undefined : octalMode(flags.mode as string),
  });
  server.on('log', (line) => console.log(`${stamp()} ${line}`));
  if (flags.verbose) {
    const table = (): void => console.log(`${stamp()} peers: ${server.peers.map((p) => `${p.id}(${p.vectors})`).join(' ') || 'none'}`);
    server.on('peer-connected', table);
    server.on('peer-disconnected', table);
  }
  const pidfile = flags.pidfile as string | undefined;
  if (pidfile) writeFileSync(pidfile, `${process.pid}\n`);

  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      console.log(`${stamp()} ${signal}: shutting down`);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void server.close().then(() => {
        if (pidfile) rmSync(pidfile, { force: true });
        resolve(0);
      });
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
