// C in one QEMU guest, Node in the other, on the same ivshmem-doorbell device (VFIO, MSI-X):
// they find each other on the bus and exchange pattern messages both ways over channels woken
// by doorbells. The C program is the host's build: guests see the host's files.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFailure, type GuestResult } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';
import { buildC, peerBinary, type CEvent } from './c-lib.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');
const COUNT = 2000;
const MAX = 1000;

let lab: Lab;

function outcome<T>(result: GuestResult): T {
  if (result.exitCode !== 0) throw new Error(describeFailure(result));
  return JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as T;
}

beforeAll(async () => {
  buildC('all');
  lab = await startLab({
    servers: { default: { size: 4 << 20, vectors: 3 } },
    guests: [
      { name: 'cguest', devices: [{ kind: 'doorbell' }] },
      { name: 'nodeguest', devices: [{ kind: 'doorbell' }] },
    ],
    onProgress: (line) => console.log(`[lab] ${line}`),
  });
}, 600_000);

afterAll(async () => {
  await lab?.close();
});

describe('a C guest and a Node guest on one doorbell device', () => {
  it('exchange messages both ways over doorbell-woken channels', async () => {
    const results = await lab.run({
      cguest: { script: join(fixtures, 'guest-c-bus.mjs'), args: [peerBinary, 'cpeer', 'node', String(COUNT), String(MAX)] },
      nodeguest: { script: join(fixtures, 'guest-c-partner.mjs'), args: ['node', 'cpeer', String(COUNT), String(MAX)] },
    });
    const c = outcome<{ events: CEvent[]; elapsedMs: number }>(results.cguest!);
    const node = outcome<{ received: number; seen: Array<{ name: string; deviceId: number | null; vectors: number }>; elapsedMs: number }>(results.nodeguest!);
    console.log(`C guest ${c.elapsedMs} ms, Node guest ${node.elapsedMs} ms for ${COUNT} messages each way`);
    const ready = c.events.find((e) => e.event === 'ready')!;
    // Both ends have doorbells: the C peer joined with its ivshmem ID and MSI-X vectors, and
    // each saw the other with them, so their channels sleep and ring rather than poll.
    expect(ready.vectors).toBe(3);
    expect(ready.deviceId).toBeGreaterThanOrEqual(0);
    expect(c.events.find((e) => e.event === 'peer-up' && e.name === 'node')).toMatchObject({ vectors: 3 });
    expect(node.seen.find((p) => p.name === 'cpeer')).toMatchObject({ deviceId: ready.deviceId, vectors: 3 });
    expect(c.events.find((e) => e.event === 'sent')).toMatchObject({ channel: 'to-node', count: COUNT });
    expect(c.events.find((e) => e.event === 'received')).toMatchObject({ channel: 'to-c', count: COUNT, end: 'eof' });
    expect(node.received).toBe(COUNT);
    // And the C peer did ring: the Node guest slept on its channels and was woken by MSI-X.
    const done = c.events.find((e) => e.event === 'done')!;
    console.log(`the C peer rang ${String(done.rings)} doorbells`);
    expect(done.rings).toBeGreaterThan(0);
  }, 300_000);
});
