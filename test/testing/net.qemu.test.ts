// A virtio-net link between two real guests: QEMU joins their NICs over a host socket of its
// own; the guests ping each other and carry TCP over it. Correctness only: the lab benchmark
// measures speed.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFailure, type GuestResult } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');
const BYTES = 3 << 20;

let lab: Lab;

function outcome<T>(result: GuestResult): T {
  if (result.exitCode !== 0) throw new Error(describeFailure(result));
  return JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as T;
}

beforeAll(async () => {
  lab = await startLab({
    guests: [
      { name: 'left', net: { address: '10.0.0.1/24' }, iommu: false },
      { name: 'right', net: { address: '10.0.0.2/24' }, iommu: false },
    ],
    onProgress: (line) => console.log(`[lab] ${line}`),
  });
}, 900_000);

afterAll(async () => {
  await lab?.close();
});

describe('a virtio-net link between two guests', () => {
  it('carries ping and TCP both ways, every byte, on the addresses the lab gave', async () => {
    const results = await lab.run({
      right: { script: join(fixtures, 'guest-net.mjs'), args: ['server', String(BYTES)] },
      left: { script: join(fixtures, 'guest-net.mjs'), args: ['client', '10.0.0.2', String(BYTES)] },
    });
    const server = outcome<{ eth0: string; received: number; sha256: string; peer: string }>(results.right!);
    const client = outcome<{ eth0: string; pingStatus: number; pingOutput: string; echoed: number; same: boolean; sha256: string }>(results.left!);
    expect(results.left!.started && results.right!.started).toBe(true);
    expect(server.eth0).toContain('inet 10.0.0.2/24');
    expect(client.eth0).toContain('inet 10.0.0.1/24');
    expect(client.pingStatus, client.pingOutput).toBe(0);
    expect(client.pingOutput).toMatch(/3 packets transmitted, 3 packets received/);
    expect(server.received).toBe(BYTES);
    expect(server.sha256).toBe(client.sha256);
    expect(server.peer).toMatch(/10\.0\.0\.1$/);
    expect(client.echoed).toBe(BYTES);
    expect(client.same).toBe(true);
  }, 600_000);

  it('boots a guest of a link alone (it listens, nobody connects) with its address', async () => {
    const results = await lab.run({ left: { script: join(fixtures, 'guest-net.mjs'), args: ['alone'] } });
    expect(outcome<{ eth0: string }>(results.left!).eth0).toContain('inet 10.0.0.1/24');
  }, 600_000);
});
