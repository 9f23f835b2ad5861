import { formatRegion, inspectRegion } from '../bus/index.js';
import { connect, openFile, openSysfs, type Device } from '../device/index.js';
import { fail } from '../errors.js';
import { flagHelp, parseArgs, type FlagSpec } from './args.js';

const specs: FlagSpec[] = [
  { short: 'S', long: 'socket', value: true, help: 'connect to this ivshmem-server as a peer and dump its memory' },
  { short: 'd', long: 'device', value: true, help: 'a guest PCI device (e.g. 0000:00:03.0), mapped through sysfs' },
  { long: 'json', value: false, help: 'print JSON for scripts' },
  { short: 'h', long: 'help', value: false, help: 'this help' },
];

export const dumpHelp = `ivshmem dump [FILE | --socket SOCKET | --device ADDRESS] [--json]

Prints a bus region's superblock, peer table and channels (positions, fill level, sleeping
flags) without changing it. FILE is a shared-memory file such as /dev/shm/NAME.
(--socket joins the server as a peer for the moment of the dump: the server's other peers see
it come and go.)

${flagHelp(specs)}`;

/** `ivshmem dump`. */
export async function dumpCommand(argv: string[]): Promise<number> {
  const { flags, rest } = parseArgs(argv, specs, 'dump');
  if (flags.help) {
    console.log(dumpHelp);
    return 0;
  }
  const sources = [rest[0], flags.socket, flags.device].filter((x) => x !== undefined);
  if (sources.length !== 1) fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'ivshmem dump: give one of FILE, --socket SOCKET or --device ADDRESS (see ivshmem dump --help)');
  let device: Device;
  if (rest[0]) device = openFile(rest[0], { readOnly: true });
  else if (flags.socket) device = await connect(flags.socket as string);
  else device = openSysfs(flags.device as string);
  try {
    const snapshot = await inspectRegion(device.memory);
    console.log(flags.json ? JSON.stringify(snapshot, null, 2) : formatRegion(snapshot));
    return snapshot.state === 'ready' && snapshot.geometry ? 0 : 2;
  } finally {
    device.close();
  }
}
