// Real QEMU guests with ivshmem-doorbell and ivshmem-plain devices, our server and a host peer.
// Each lab.run() boots fresh guests (about 10-15 s each under TCG), so every boot checks
// several things at once.
import { createHash, randomInt } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type ServerPeerDevice } from '../../src/device/server-peer.js';
import { openFile } from '../../src/device/file.js';
import { describeFailure, type GuestResult } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');
const VECTORS = 64; // the most a server gives: every MSI-X table entry is exercised
const SIZE = 1 << 20;
const ROUNDS = 3;

let lab: Lab;
let host: ServerPeerDevice;

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The guest's final JSON line; a failed guest fails the test with its whole story. */
function outcome<T>(result: GuestResult): T {
  if (result.exitCode !== 0) throw new Error(describeFailure(result));
  const last = result.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

beforeAll(async () => {
  lab = await startLab({
    servers: { default: { size: SIZE, vectors: VECTORS } },
    guests: [
      { name: 'a', devices: [{ kind: 'doorbell' }, { kind: 'plain', shm: 'p', size: SIZE }] },
      { name: 'b', devices: [{ kind: 'doorbell' }, { kind: 'plain', shm: 'p', size: SIZE }] },
      { name: 'c', devices: [{ kind: 'doorbell' }] },
      { name: 'd', devices: [{ kind: 'doorbell' }, { kind: 'plain', shm: 'p', size: SIZE }], iommu: false },
    ],
    onProgress: (line) => console.log(`[lab] ${line}`),
  });
  // The host peer comes first, so it is peer 0 and the guests follow in run order.
  // The lab's server shares a named file with the guests' plain devices: never sealed.
  host = await connect(lab.socketPath(), { vectors: VECTORS, sealedMemory: 'warn' });
}, 600_000);

afterAll(async () => {
  host?.close();
  await lab?.close();
});

describe('two guests through VFIO', () => {
  interface Pair {
    role: number;
    id: number;
    peer: number;
    vectors: number;
    size: number;
    before: Array<{ address: string; kind: string; size: number; driver: string | null; iommuGroup: number | null; vectors: number | null; revision: number }>;
    refusedBind: string;
    bound: string | null;
    inUse: string;
    unprivileged: { vfio: string; sysfs: string };
    after: string | null;
    totals: number[];
    events: number;
    roundTripUs: number;
    bar2Matches: boolean;
    plainMatches: boolean;
    hashes: { bar2: string; plain: string };
    badRing: Record<string, string>;
  }
  let a: Pair;
  let b: Pair;
  let results: Record<string, GuestResult>;

  beforeAll(async () => {
    const nonce = randomInt(1, 2 ** 31);
    const args = (role: number): string[] => [String(role), String(nonce), String(ROUNDS)];
    results = await lab.run({
      a: { script: join(fixtures, 'guest-pair.mjs'), args: args(0) },
      b: { script: join(fixtures, 'guest-pair.mjs'), args: args(1) },
    });
    console.log(`[lab] pair: a ${results.a!.durationMs} ms, b ${results.b!.durationMs} ms`);
    a = outcome<Pair>(results.a!);
    b = outcome<Pair>(results.b!);
    console.log(`[lab] guest-to-guest doorbell round trip: ${a.roundTripUs} µs / ${b.roundTripUs} µs`);
  }, 300_000);

  it('each receives exactly the doorbells sent to it, on every vector', () => {
    for (const g of [a, b]) {
      expect(g.vectors).toBe(VECTORS);
      // ROUNDS doorbells per vector as the receiver, ROUNDS echoes as the sender.
      expect(g.totals).toEqual(new Array(VECTORS).fill(2 * ROUNDS));
      expect(g.events).toBe(2 * ROUNDS * VECTORS);
    }
  });

  it('IVPosition is the ID our server assigned, and each finds the other', () => {
    expect(a.id).toBe(results.a!.devices[0]!.kind === 'doorbell' && results.a!.devices[0]!.peerId);
    expect(b.id).toBe(results.b!.devices[0]!.kind === 'doorbell' && results.b!.devices[0]!.peerId);
    expect(new Set([host.id, a.id, b.id]).size).toBe(3);
    expect(a.peer).toBe(b.id);
    expect(b.peer).toBe(a.id);
  });

  it('bytes written through BAR2 and ivshmem-plain are seen by the other guest and the host', () => {
    expect(b.bar2Matches).toBe(true);
    expect(b.plainMatches).toBe(true);
    expect(b.hashes).toEqual(a.hashes);
    expect(sha256(new Uint8Array(host.memory, 4096, 64 * 1024))).toBe(a.hashes.bar2);
    const plain = openFile(lab.shmPath('p'));
    try {
      expect(sha256(new Uint8Array(plain.memory, 0, 64 * 1024))).toBe(a.hashes.plain);
    } finally {
      plain.close();
    }
  });

  it('rejects bad ring() arguments in the guest', () => {
    for (const g of [a, b]) {
      expect(g.badRing).toEqual({
        negativePeer: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        peerTooLarge: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        fractionalPeer: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        vectorTooLarge: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        vector256: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        negativeVector: 'ERR_IVSHMEM_INVALID_ARGUMENT',
        plainRing: 'ERR_IVSHMEM_NO_DOORBELL',
        sysfsInterrupts: 'ERR_IVSHMEM_NO_INTERRUPTS',
      });
    }
  });

  it('listDevices describes both devices; vfio-pci is bound only while the device is open', () => {
    expect(a.before).toEqual([
      expect.objectContaining({ address: '0000:00:10.0', kind: 'doorbell', size: SIZE, vectors: VECTORS, driver: null, revision: 1 }),
      expect.objectContaining({ address: '0000:00:11.0', kind: 'plain', size: SIZE, vectors: null, driver: null, revision: 1 }),
    ]);
    expect(a.before[0]!.iommuGroup).toEqual(expect.any(Number));
    expect(a.refusedBind).toBe('ERR_IVSHMEM_DEVICE_BUSY');
    expect(a.bound).toBe('vfio-pci');
    expect(a.after).toBeNull();
  });

  it('refuses clearly: a device in use elsewhere, and a user without rights', () => {
    expect(a.inUse).toMatch(/^ERR_IVSHMEM_DEVICE_BUSY .*open in another process/);
    expect(a.unprivileged.vfio).toMatch(/^EACCES .*driver_override.*needs root/);
    expect(a.unprivileged.sysfs).toMatch(/^EACCES .*resource0/);
  });
});

describe('a guest and a host peer', () => {
  it('ping-pong on every vector', async () => {
    const COUNT = 256;
    const nonce = randomInt(1, 2 ** 31);
    const ctl = new Int32Array(host.memory, 0, 256);
    // The guest's slot (3) is read on each doorbell: it is there before the first one.
    const received = new Array<number>(VECTORS).fill(0);
    const onInterrupt = (vector: number, count: number): void => {
      received[vector]! += count;
      if (Atomics.load(ctl, 3 * 16) !== nonce) return;
      const guest = Atomics.load(ctl, 3 * 16 + 1);
      for (let i = 0; i < count; i++) host.ring(guest, vector);
    };
    host.on('interrupt', onInterrupt);
    Atomics.store(ctl, 2 * 16 + 1, host.id);
    Atomics.store(ctl, 2 * 16 + 2, 1);
    Atomics.store(ctl, 2 * 16, nonce);
    try {
      const { c } = await lab.run({ c: { script: join(fixtures, 'guest-host.mjs'), args: [String(nonce), String(COUNT)] } });
      const out = outcome<{ id: number; host: number; totals: number[]; roundTripUs: number }>(c!);
      console.log(`[lab] guest-to-host doorbell round trip: ${out.roundTripUs} µs (guest ${c!.durationMs} ms)`);
      expect(out.host).toBe(host.id);
      expect(out.id).toBe(c!.devices[0]!.kind === 'doorbell' && c!.devices[0]!.peerId);
      expect(out.totals).toEqual(new Array(VECTORS).fill(COUNT / VECTORS));
      expect(received).toEqual(new Array(VECTORS).fill(COUNT / VECTORS));
    } finally {
      host.off('interrupt', onInterrupt);
    }
  }, 300_000);
});

describe('a guest without an IOMMU', () => {
  it('uses sysfs for memory and doorbells, and refuses VFIO with a way out', async () => {
    const nonce = randomInt(1, 2 ** 31);
    const { d } = await lab.run({ d: { script: join(fixtures, 'guest-sysfs.mjs'), args: [String(nonce)] } });
    const out = outcome<Record<string, unknown> & { vfioError: { code: string; message: string }; hashes: { bar2: string; plain: string }; devices: Array<{ iommuGroup: number | null }>; info: { json: unknown; table: string } }>(d!);
    expect(out.vfioError.code).toBe('ERR_IVSHMEM_NO_IOMMU');
    expect(out.vfioError.message).toMatch(/intel-iommu/);
    expect(out.vfioError.message).toMatch(/no-IOMMU/);
    expect(out.driverAfterRefusal).toBeNull();
    expect(out.devices.map((x) => x.iommuGroup)).toEqual([null, null]);
    expect(out.info.json).toEqual(out.devices);
    expect(out.info.table).toMatch(/0000:00:10\.0 +doorbell +1 MiB +64 +- +none/);
    expect(out.info.table).toMatch(/0000:00:11\.0 +plain +1 MiB +- +- +none/);
    expect(out).toMatchObject({
      backend: 'sysfs',
      id: d!.devices[0]!.kind === 'doorbell' ? d!.devices[0]!.peerId : -1,
      // Root reads the MSI-X capability in config space: the vector count is known even here.
      vectors: VECTORS,
      size: SIZE,
      ringSelf: 'no error',
      interrupts: 'ERR_IVSHMEM_NO_INTERRUPTS',
      plainRing: 'ERR_IVSHMEM_NO_DOORBELL',
      plainId: 0,
      closedAccess: 0,
      ringClosed: 'ERR_IVSHMEM_CLOSED',
    });
    expect(sha256(new Uint8Array(host.memory, 128 * 1024, 4096))).toBe(out.hashes.bar2);
    const plain = openFile(lab.shmPath('p'));
    try {
      expect(sha256(new Uint8Array(plain.memory, 128 * 1024, 4096))).toBe(out.hashes.plain);
    } finally {
      plain.close();
    }
  }, 300_000);
});

describe('lab guests', () => {
  it('are killed at their timeout and report it', async () => {
    const { d } = await lab.run({ d: { script: join(fixtures, 'guest-sysfs.mjs'), args: ['1'], timeoutMs: 2_000 } });
    expect(d!.timedOut).toBe(true);
    expect(d!.exitCode).toBeNull();
    expect(describeFailure(d!)).toMatch(/timed out/);
  }, 60_000);

  it('are killed when the run is aborted', async () => {
    const started = Date.now();
    const run = lab.run({ d: { script: join(fixtures, 'guest-sysfs.mjs'), args: ['1'] } }, { signal: AbortSignal.timeout(1_500) });
    await expect(run).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 60_000);
});
