// A guest process that binds vfio-pci and exits without close() gives the device back.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFailure } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({
    servers: { default: { size: 1 << 20, vectors: 1 } },
    guests: [{ name: 'solo', devices: [{ kind: 'doorbell' }] }],
  });
}, 600_000);
afterAll(() => lab?.close());

describe('VFIO in a guest', () => {
  it('restores the driver when a process exits (or dies of an exception) without close()', async () => {
    const { solo } = await lab.run({ solo: { script: join(import.meta.dirname, '..', 'fixtures', 'guest-vfio-exit.mjs') } });
    if (solo!.exitCode !== 0) throw new Error(describeFailure(solo!));
    const r = JSON.parse(solo!.stdout.trim().split('\n').pop()!);
    expect(r.before).toBeNull();
    expect(r.exited.status).toBe(0);
    expect(r.afterExit).toBeNull();
    expect(r.threw.status).toBe(1);
    expect(r.threw.stderr).toContain("on purpose");
    expect(r.afterThrow).toBeNull();
  }, 300_000);
});
