// The run-to-completion path (sendSync / receiveSync) between two real guests, woken by
// MSI-X doorbells through VFIO: records intact under a ring that keeps filling up, EOF both
// ways, timeouts on receive and on a full ring, and a peer killed mid-stream. Correctness only:
// `ivshmem bench --lab` measures its speed.
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFailure, type GuestResult } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');

let lab: Lab;
let results: Record<string, GuestResult>;

const lastJson = <T>(result: GuestResult): T => JSON.parse(result.stdout.trim().split('\n').pop() ?? 'null') as T;

beforeAll(async () => {
  lab = await startLab({
    servers: { default: { size: 1 << 20, vectors: 1 } },
    guests: [
      { name: 'a', devices: [{ kind: 'doorbell' }] },
      { name: 'b', devices: [{ kind: 'doorbell' }] },
    ],
    onProgress: (line) => console.log(`[lab] ${line}`),
  });
  const nonce = String(randomInt(1, 2 ** 31));
  results = await lab.run({
    a: { script: join(fixtures, 'guest-rtc.mjs'), args: ['a', nonce] },
    b: { script: join(fixtures, 'guest-rtc.mjs'), args: ['b', nonce] },
  });
}, 900_000);

afterAll(async () => {
  await lab?.close();
});

describe('run-to-completion between two guests', () => {
  it('carries every record through a ring that fills up, then reports EOF (receiveSync throws, readySync is false)', () => {
    const b = lastJson<{ streamed: number; eof: string; eofReady: string }>(results.b!);
    expect(b, describeFailure(results.b!)).toMatchObject({ streamed: 300, eof: 'ERR_IVSHMEM_CHANNEL_CLOSED', eofReady: 'no error' });
  });

  it('answers round trips, every reply intact, and ends with EOF both ways', () => {
    expect(results.a!.exitCode, describeFailure(results.a!)).toBe(0);
    const a = lastJson<{ echoed: number; eofBack: string }>(results.a!);
    const b = lastJson<{ served: number }>(results.b!);
    expect(a).toMatchObject({ echoed: 200, eofBack: 'ERR_IVSHMEM_CHANNEL_CLOSED' });
    expect(b.served).toBe(200);
  });

  it('times out a receive with nothing coming and a send into a ring nobody reads', () => {
    const b = lastJson<{ receiveTimeout: string; filled: number; sendTimeout: string }>(results.b!);
    expect(b).toMatchObject({ receiveTimeout: 'ERR_IVSHMEM_TIMEOUT', sendTimeout: 'ERR_IVSHMEM_TIMEOUT' });
    expect(b.filled).toBeGreaterThan(0);
  });

  it('survives a peer killed mid-stream: its records arrive, then both directions time out instead of hanging', () => {
    // b killed itself with SIGKILL after writing its records: 128 + 9.
    expect(results.b!.exitCode, describeFailure(results.b!)).toBe(137);
    const a = lastJson<{ fromDead: number; deadReceive: string; filledDead: number; deadSend: string; usableAfter: boolean }>(results.a!);
    expect(a).toMatchObject({ fromDead: 50, deadReceive: 'ERR_IVSHMEM_TIMEOUT', deadSend: 'ERR_IVSHMEM_TIMEOUT', usableAfter: true });
    expect(a.filledDead).toBeGreaterThan(0);
  });
});
