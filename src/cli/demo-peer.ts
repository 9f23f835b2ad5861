// One of the two peer processes of `ivshmem demo`: joins the bus on the server's memory as
// 'ping' or 'pong'; pong echoes ping's channel back, ping measures.
import { attach } from '../bus/index.js';
import { utf8Codec } from '../channel/index.js';
import { connect } from '../device/index.js';
import { ivshmemError } from '../errors.js';

const [socketPath, role, roundsText] = process.argv.slice(2) as [string, 'ping' | 'pong', string];
const rounds = Number(roundsText);
const report = (msg: object): void => void process.send!(msg);

const device = await connect(socketPath);
const bus = await attach(device, { name: role });
report({ event: 'connected', role, id: device.id, slot: bus.self.slot, vectors: device.vectors, size: device.size });

if (role === 'pong') {
  const ping = await bus.waitForPeer('ping');
  const inbox = await bus.accept('to-pong', { from: ping, codec: utf8Codec });
  const outbox = bus.open(ping, 'to-ping', { codec: utf8Codec });
  for await (const text of inbox) await outbox.send(text.replace('ping', 'pong'));
  outbox.close();
  process.on('message', () => {
    bus.close();
    device.close();
    process.exit(0);
  });
} else {
  const pong = await bus.waitForPeer('pong');
  report({ event: 'peer', name: pong.name, slot: pong.slot, deviceId: pong.deviceId });
  const outbox = bus.open(pong, 'to-pong', { codec: utf8Codec });
  const inbox = await bus.accept('to-ping', { from: pong, codec: utf8Codec });
  const times = new Float64Array(rounds);
  const samples: string[] = [];
  for (let i = 1; i <= rounds; i++) {
    const start = process.hrtime.bigint();
    await outbox.send(`ping ${i}`);
    const reply = await inbox.receive();
    times[i - 1] = Number(process.hrtime.bigint() - start) / 1000;
    if (reply !== `pong ${i}`) throw ivshmemError('ERR_IVSHMEM_PROTOCOL', `ivshmem demo: round ${i}: got '${reply}'`);
    if (i <= 3) samples.push(`ping ${i} -> ${reply}`);
  }
  times.sort();
  // One-way: 64-byte messages as fast as the channel takes them, echoed back as they come.
  const burst = 100_000;
  const payload = 'x'.repeat(58);
  const start = process.hrtime.bigint();
  const receiving = (async () => {
    for (let i = 0; i < burst; i++) await inbox.receive();
  })();
  for (let i = 0; i < burst; i++) await outbox.send(`ping${payload}`);
  await receiving;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  report({
    event: 'done',
    samples,
    rounds,
    p50: times[Math.floor(rounds * 0.5)],
    p99: times[Math.floor(rounds * 0.99)],
    mean: times.reduce((a, b) => a + b, 0) / rounds,
    burst,
    perSecond: burst / seconds,
  });
  process.on('message', () => {
    outbox.close();
    bus.close();
    device.close();
    process.exit(0);
  });
}
