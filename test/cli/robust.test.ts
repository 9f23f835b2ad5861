// The command line as users type it: node:util parsing (-n2, -vF, --), --version, exit codes in
// --help, progress lines, `lab status --json`, and one clear line (never a stack) for bad input.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseArgs } from '../../src/cli/args.js';
import { shmPath } from '../helpers.js';

const root = join(import.meta.dirname, '..', '..');
const cli = join(root, 'dist', 'cli', 'main.js');
const work = mkdtempSync(join(tmpdir(), 'ivshmem-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function ivshmem(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Outcome> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [cli, ...args], { env, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// A failure the user caused: exit 1, one line naming the command, no stack frames.
function oneLine(outcome: Outcome, pattern: RegExp): void {
  expect(outcome.code).toBe(1);
  expect(outcome.stderr.trim().split('\n')).toHaveLength(1);
  expect(outcome.stderr).toMatch(pattern);
  expect(outcome.stderr).not.toMatch(/^\s+at /m);
}

describe('argument parsing', () => {
  const specs = [
    { short: 'n', long: 'vectors', value: true, help: '' },
    { short: 'v', long: 'verbose', value: false, help: '' },
    { short: 'F', long: 'foreground', value: false, help: '' },
  ];

  it('takes -n2, grouped -vF, --long=value, and everything after -- as positional', () => {
    expect(parseArgs(['-n2', '-vF', 'x'], specs, 't')).toEqual({ flags: { vectors: '2', verbose: true, foreground: true }, rest: ['x'] });
    expect(parseArgs(['--vectors=3', 'script.mjs', '--', '--verbose', '-n', '5'], specs, 't')).toEqual({
      flags: { vectors: '3' },
      rest: ['script.mjs', '--verbose', '-n', '5'],
    });
  });

  it('the server starts with QEMU-style -n2 -vF', async () => {
    const socket = shmPath('cli-n2');
    const proc = spawn(process.execPath, [cli, 'server', '-n2', '-vF', '-S', socket, '-l', '64K']);
    try {
      let out = '';
      proc.stdout.setEncoding('utf8');
      while (!out.includes('listening on')) out += (await once(proc.stdout, 'data'))[0];
      expect(out).toContain('2 vector(s) per peer');
    } finally {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
      rmSync(socket, { force: true });
    }
  });
});

describe('ivshmem --version and --help', () => {
  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect((await ivshmem(['--version'])).stdout.trim()).toBe(version);
  });

  it('--help documents the exit codes', async () => {
    const { stdout, code } = await ivshmem(['--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Exit status:\n\s+0\s+done\n\s+1\s+failed/);
    expect(stdout).toMatch(/70\s+an internal error/);
  });
});

describe('bad input gets one clear line, never a stack', () => {
  it('dump of a file smaller than a superblock: says so, exits 2', async () => {
    const file = join(work, 'small');
    writeFileSync(file, Buffer.alloc(1000));
    const outcome = await ivshmem(['dump', file]);
    expect(outcome.code).toBe(2);
    expect(outcome.stdout).toMatch(/1000 bytes cannot hold a region's 4096-byte superblock/);
    expect(outcome.stderr).toBe('');
  });

  it('bench --sizes abc, --ms -5, --ms=-5: refused before the benchmark starts any process', async () => {
    for (const [args, pattern] of [
      [['bench', '--sizes', 'abc'], /ivshmem bench: --sizes takes byte counts .* got 'abc'/],
      [['bench', '--ms', '-5'], /ivshmem bench: --ms needs a value \(one starting with '-' is written --ms=VALUE\)/],
      [['bench', '--ms=-5'], /ivshmem bench: --ms must be an integer 1\.\.\d+, got '-5'/],
    ] as const) {
      const outcome = await ivshmem([...args]);
      oneLine(outcome, pattern);
      // The benchmark prints its tables to stdout: it never ran.
      expect(outcome.stdout).toBe('');
    }
  });

  it('server -n abc quotes what was given', async () => {
    oneLine(await ivshmem(['server', '-n', 'abc', '-S', join(work, 's.sock')]), /ivshmem server: --vectors must be an integer 1\.\.64, got 'abc'/);
  });

  it('unknown and value-less flags name the flag', async () => {
    oneLine(await ivshmem(['server', '--bogus']), /ivshmem server: unknown option --bogus/);
    oneLine(await ivshmem(['info', '--json=3']), /ivshmem info: --json takes no value/);
  });

  it('lab prepare without busybox, apt-get or dpkg-deb names the Debian packages before downloading anything', async () => {
    const bin = join(work, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(process.execPath, join(bin, 'node'));
    const cache = join(work, 'lab-cache');
    const outcome = await ivshmem(['lab', 'prepare', '--cache-dir', cache], { ...process.env, PATH: bin });
    oneLine(outcome, /ivshmem lab: missing busybox, apt-get, dpkg-deb: install busybox-static apt dpkg/);
    expect(existsSync(cache)).toBe(false);
  });
});

describe('ivshmem lab status and progress', () => {
  it('status --json gives the image, the accelerator and each tool with its Debian package', async () => {
    const outcome = await ivshmem(['lab', 'status', '--json']);
    const status = JSON.parse(outcome.stdout);
    expect(status.tools.map((t: { tool: string; package: string }) => `${t.tool}:${t.package}`)).toEqual([
      'qemu-system-x86_64:qemu-system-x86',
      'busybox:busybox-static',
      'apt-get:apt',
      'dpkg-deb:dpkg',
    ]);
    expect(typeof status.accelerator).toBe('string');
    expect(outcome.code).toBe(status.ready ? 0 : 2);
  });

  it('prints plain progress lines when not on a terminal', async () => {
    const outcome = await ivshmem(['lab', 'prepare']);
    expect(outcome.code).toBe(0);
    expect(outcome.stderr).toMatch(/^lab: .+\n/);
    expect(outcome.stderr).not.toMatch(/[\r\x1b]/);
  });

  it('shows a spinner line on a terminal, in colour unless NO_COLOR is set', async () => {
    // script(1) runs the command on a real pseudo-terminal.
    const onTty = async (env: NodeJS.ProcessEnv): Promise<string> =>
      (await promisify(execFile)('script', ['-qec', `${process.execPath} ${cli} lab prepare`, '/dev/null'], { env, encoding: 'utf8' })).stdout;
    const coloured = await onTty(process.env);
    expect(coloured).toMatch(/\r.*✓.* lab: /);
    expect(coloured).toContain('\x1b[32m');
    const { NO_COLOR: _, ...rest } = process.env;
    const plain = await onTty({ ...rest, NO_COLOR: '1' });
    expect(plain).toMatch(/\r✓ lab: /);
    expect(plain).not.toMatch(/\x1b\[\d+m/);
  });
});
