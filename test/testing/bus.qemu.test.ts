// The bus across real guests: two QEMU guests (VFIO, MSI-X doorbells) and a host peer find each
// other by name and exchange lines both ways over channels, woken by doorbells.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attach, connect, utf8Codec, type Bus, type ServerPeerDevice } from '../../src/index.js';
import { describeFailure, type GuestResult } from '../../src/testing/guest.js';
import { startLab, type Lab } from '../../src/testing/lab.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');
const COUNT = 300;

let lab: Lab;
let device: ServerPeerDevice;
let bus: Bus;

function outcome<T>(result: GuestResult): T {
  if (result.exitCode !== 0) throw new Error(describeFailure(result));
  return JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as T;
}

beforeAll(async () => {
  lab = await startLab({
    servers: { default: { size: 4 << 20, vectors: 3 } },
    guests: [
      { name: 'red', devices: [{ kind: 'doorbell' }] },
      { name: 'blue', devices: [{ kind: 'doorbell' }] },
    ],
    onProgress: (line) => console.log(`[lab] ${line}`),
  });
  // The lab's server shares a named file with the guests' plain devices: never sealed.
  device = await connect(lab.socketPath(), { sealedMemory: 'warn' });
  bus = await attach(device, { name: 'host', heartbeat: 2000 });
}, 600_000);

afterAll(async () => {
  bus?.close();
  device?.close();
  await lab?.close();
});

describe('the bus across two guests and a host peer', () => {
  it('finds every peer by name and carries lines both ways over doorbell-woken channels', async () => {
    // The host talks to both guests the way they talk to each other.
    const hostSide = (async () => {
      const received: Record<string, number> = {};
      await Promise.all(
        ['red', 'blue'].flatMap((name) => [
          (async () => {
            const peer = await bus.waitForPeer(name);
            const out = bus.open(peer, 'chat', { codec: utf8Codec });
            for (let i = 0; i < COUNT; i++) await out.send(`host->${name} ${i}`);
            out.close();
          })(),
          (async () => {
            const inbox = await bus.accept('chat', { from: await bus.waitForPeer(name), codec: utf8Codec });
            let n = 0;
            for await (const line of inbox) {
              expect(line).toBe(`${name}->host ${n}`);
              n++;
            }
            received[name] = n;
          })(),
        ]),
      );
      return received;
    })();
    const results = await lab.run({
      red: { script: join(fixtures, 'guest-bus.mjs'), args: ['red', String(COUNT), 'blue', 'host'] },
      blue: { script: join(fixtures, 'guest-bus.mjs'), args: ['blue', String(COUNT), 'red', 'host'] },
    });
    type Outcome = { name: string; id: number; received: Record<string, number>; seen: Array<{ name: string; deviceId: number; vectors: number }>; elapsedMs: number };
    const red = outcome<Outcome>(results.red!);
    const blue = outcome<Outcome>(results.blue!);
    console.log(`bus in guests: red ${red.elapsedMs} ms, blue ${blue.elapsedMs} ms for ${COUNT} lines each way with every peer`);
    expect(red.received).toEqual({ blue: COUNT, host: COUNT });
    expect(blue.received).toEqual({ red: COUNT, host: COUNT });
    expect(await hostSide).toEqual({ red: COUNT, blue: COUNT });
    // Each guest saw the others with their ivshmem IDs and MSI-X vectors: doorbells, not polling.
    for (const g of [red, blue]) {
      expect(g.seen.find((p) => p.name === 'host')).toMatchObject({ deviceId: device.id, vectors: 3 });
      expect(g.seen.every((p) => p.vectors === 3 && p.deviceId !== null)).toBe(true);
    }
    expect(red.id).not.toBe(blue.id);
  }, 300_000);
});
