// `ivshmem lab run SCRIPT -- FLAGS`: the flags after -- reach the script in the guest, and the
// boot is reported as it happens (plain lines: not a terminal).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

it('passes the flags after -- to the guest script and reports the boot', async () => {
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    [join(root, 'dist', 'cli', 'main.js'), 'lab', 'run', '--no-iommu', join(root, 'test', 'fixtures', 'print-args.mjs'), 'word', '--', '--flag', '-x', 'value'],
    { encoding: 'utf8' },
  );
  expect(stdout.trim()).toBe('guest0: ["word","--flag","-x","value"]');
  expect(stderr).toMatch(/^lab: booting guest0/m);
}, 600_000);
