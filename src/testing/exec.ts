// Child processes for the lab's preparation steps: every failure names the command and carries
// its stderr, because "exit 100" from apt means nothing to someone reading a CI log.
import { spawn } from 'node:child_process';
import { LabError } from './errors.js';

/** Runs a command to completion; resolves with its stdout, rejects with its stderr. */
export function run(
  command: string,
  args: string[],
  options: { cwd?: string; input?: Buffer; stdout?: 'buffer' | 'ignore' } = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      stdio: [options.input ? 'pipe' : 'ignore', options.stdout === 'ignore' ? 'ignore' : 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (error) =>
      reject(new LabError(`cannot run ${command}: ${error.message}`, { cause: error })),
    );
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out));
      const stderr = Buffer.concat(err).toString().trim();
      reject(
        new LabError(
          `${[command, ...args].join(' ')} failed (${signal ?? `exit ${code}`})${stderr ? `:\n${stderr}` : ''}`,
        ),
      );
    });
    if (options.input) child.stdin?.end(options.input);
  });
}

/** True when `command` can be found on PATH. */
export async function have(command: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${command}`]);
    return true;
  } catch {
    return false;
  }
}
