import { formatDevices, listDevices } from '../device/index.js';
import { nativePath } from '../native.js';
import { parseArgs } from './args.js';

export const infoHelp = `ivshmem info [--json]: the ivshmem PCI devices of this machine (inside a guest)

Lists every 1af4:1110 function with its address, kind (plain or doorbell), memory size,
interrupt vectors, bound driver and IOMMU group.`;

/** `ivshmem info`. */
export async function infoCommand(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv, [{ long: 'json', value: false, help: '' }, { short: 'h', long: 'help', value: false, help: '' }], 'info');
  if (flags.help) {
    console.log(infoHelp);
    return 0;
  }
  const devices = listDevices();
  if (flags.json) {
    console.log(JSON.stringify(devices, null, 2));
  } else {
    console.log(formatDevices(devices));
    console.log(`\nnative addon: ${nativePath()}`);
  }
  return 0;
}
