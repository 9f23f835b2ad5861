// What a client checks of the shared-memory fd a server hands it, before mapping it: a memory
// another peer can shrink kills every process that mapped it with SIGBUS on its next access, and
// one whose seals are still open can be sealed against writable mappings by any peer.
import { fail } from '../errors.js';
import { native } from '../native.js';

/**
 * What {@link connect} does with shared memory that is not sealed against shrinking
 * (`F_SEAL_SHRINK`) and against further seals (`F_SEAL_SEAL`):
 * - `'require'` (the default) refuses it with `ERR_IVSHMEM_UNSEALED_MEMORY`, before mapping it;
 * - `'warn'` maps it and emits a process warning (code `IVSHMEM_UNSEALED_MEMORY`);
 * - `'ignore'` maps it silently.
 *
 * `'warn'` and `'ignore'` do not protect against a hostile server or peer: whoever can shrink the
 * memory can kill this process with SIGBUS. Use them only among peers you trust, for servers that
 * cannot seal: QEMU's contrib ivshmem-server, or ours given a file (`shm`, `-M`/`-m`). Our
 * server's default memory is sealed.
 */
export type SealedMemoryPolicy = 'require' | 'warn' | 'ignore';

const POLICIES: readonly SealedMemoryPolicy[] = ['require', 'warn', 'ignore'];

/** Checks the `sealedMemory` option. */
export function checkSealedMemoryPolicy(policy: unknown, what: string): SealedMemoryPolicy {
  if (policy === undefined) return 'require';
  if (!POLICIES.includes(policy as SealedMemoryPolicy)) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `${what}: sealedMemory must be 'require', 'warn' or 'ignore', got ${JSON.stringify(policy)}`);
  }
  return policy as SealedMemoryPolicy;
}

/** The two reads the check makes of the memory fd (the native calls; a test puts a race between them). */
export interface MemoryProbe {
  fstat(fd: number, path?: string): { size: number };
  getSeals(fd: number, path?: string): number;
}

/** The seals a shared memory needs before we trust its size: no shrinking, no further seals. */
function missingSeals(fd: number, path: string, probe: MemoryProbe): string[] {
  let seals: number;
  try {
    seals = probe.getSeals(fd, path);
  } catch {
    // EINVAL: a file that cannot carry seals at all (not shmem).
    seals = 0;
  }
  const missing: string[] = [];
  if ((seals & native.seals.SHRINK) === 0) missing.push('F_SEAL_SHRINK');
  if ((seals & native.seals.SEAL) === 0) missing.push('F_SEAL_SEAL');
  return missing;
}

/**
 * Checks the memory fd from the server at `path` before it is mapped, and returns its size:
 * positive, and sealed as `policy` asks. Throws `ERR_IVSHMEM_UNSEALED_MEMORY` or
 * `ERR_IVSHMEM_PROTOCOL` (empty memory).
 */
export function checkServerMemory(fd: number, path: string, policy: SealedMemoryPolicy, probe: MemoryProbe = native): number {
  // Seals first: once F_SEAL_SHRINK is set the size can only grow, so a size read after the seals
  // is one the memory keeps. Read the other way round, the server could shrink and seal in
  // between, and we would map the old size and die of SIGBUS at its end.
  const missing = policy === 'ignore' ? [] : missingSeals(fd, path, probe);
  const { size } = probe.fstat(fd, path);
  if (size <= 0) fail('ERR_IVSHMEM_PROTOCOL', `ivshmem protocol error from '${path}': the shared memory is empty`, { path });
  if (missing.length === 0) return size;
  const what = `the shared memory from '${path}' is not sealed (${missing.join(', ')} missing): any peer can shrink it and kill every process that mapped it with SIGBUS`;
  if (policy === 'require') {
    fail(
      'ERR_IVSHMEM_UNSEALED_MEMORY',
      `${what}. Use a server that hands out sealed memory (ivshmem server without -M/--shm or -m/--dir, its default), or, among peers you trust (QEMU's contrib server, a file given with -M/-m), connect with sealedMemory: 'warn' to accept the risk.`,
      { path },
    );
  }
  process.emitWarning(`${what}. Trust every peer of this server, or use one that seals its memory (ivshmem server without -M/--shm).`, { code: 'IVSHMEM_UNSEALED_MEMORY' });
  return size;
}
