// An integration test with the QEMU lab (ivshmem/testing): a real guest runs guest.mjs against
// this process, which answers as host.mjs does. A vitest test file: copy it among your tests
// (this package runs it from test/examples/lab.qemu.test.ts).
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { attach, connect } from 'ivshmem';
import { describeFailure, startLab } from 'ivshmem/testing';
import { answerShouts } from './shout.mjs';

let lab;
let device;
let bus;

beforeAll(async () => {
  lab = await startLab({
    servers: { default: { size: 1 << 20, vectors: 2 } },
    guests: [{ name: 'g', devices: [{ kind: 'doorbell' }] }],
  });
  // The lab's server keeps its memory in a named /dev/shm file (so that a run cut short leaves
  // files the next lab can find and remove), and a named file cannot be sealed: accept that here.
  device = await connect(lab.socketPath(), { sealedMemory: 'warn' });
  bus = await attach(device, { name: 'host' });
  answerShouts(bus);
}, 600_000);

afterAll(async () => {
  bus?.close();
  device?.close();
  await lab?.close();
});

it('a guest shouts and the host answers', async () => {
  const { g } = await lab.run({ g: { script: fileURLToPath(new URL('guest.mjs', import.meta.url)), args: ['g', 'hello', 'guest'] } });
  expect(g.exitCode, describeFailure(g)).toBe(0);
  expect(g.stdout.trim().split('\n')).toEqual(['HELLO', 'GUEST']);
}, 600_000);
