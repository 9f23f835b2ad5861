// One of the two peer processes of `ivshmem demo`: connects to the server and plays ping or pong
// through the shared memory, with a doorbell for each message.
import { connect } from '../device/server-peer.js';

const [socketPath, role, roundsText] = process.argv.slice(2) as [string, 'ping' | 'pong', string];
const rounds = Number(roundsText);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Two mailboxes in the shared memory: ping writes the first, pong the second.
const MAILBOX = { ping: 0, pong: 4096 } as const;

function post(memory: ArrayBuffer, box: number, seq: number, text: string): void {
  const bytes = encoder.encode(text);
  new Uint8Array(memory, box + 16, bytes.length).set(bytes);
  const header = new Int32Array(memory, box, 4);
  header[1] = bytes.length;
  // The sequence number goes last: once the other side sees it, the text is there.
  Atomics.store(header, 0, seq);
}

function read(memory: ArrayBuffer, box: number): { seq: number; text: string } {
  const header = new Int32Array(memory, box, 4);
  const seq = Atomics.load(header, 0);
  const length = Math.min(Math.max(header[1]!, 0), 4000);
  return { seq, text: decoder.decode(new Uint8Array(memory, box + 16, length).slice()) };
}

const dev = await connect(socketPath);
const report = (msg: object): void => void process.send!(msg);
report({ event: 'connected', role, id: dev.id, vectors: dev.vectors, size: dev.size });

const other = async (): Promise<number> =>
  dev.peers[0]?.id ?? new Promise<number>((resolve) => dev.once('peer-connected', resolve));

if (role === 'pong') {
  const ping = await other();
  dev.on('interrupt', () => {
    const { seq, text } = read(dev.memory, MAILBOX.ping);
    post(dev.memory, MAILBOX.pong, seq, text.replace('ping', 'pong'));
    dev.ring(ping, 0);
  });
  process.on('message', () => {
    dev.close();
    process.disconnect();
  });
} else {
  const pong = await other();
  const times = new Float64Array(rounds);
  const samples: string[] = [];
  for (let i = 1; i <= rounds; i++) {
    const start = process.hrtime.bigint();
    post(dev.memory, MAILBOX.ping, i, `ping ${i}`);
    dev.ring(pong, 0);
    let reply = read(dev.memory, MAILBOX.pong);
    // A doorbell can be coalesced with an earlier one: wait until the reply is really there.
    while (reply.seq !== i) {
      await dev.waitInterrupt(0);
      reply = read(dev.memory, MAILBOX.pong);
    }
    times[i - 1] = Number(process.hrtime.bigint() - start) / 1000;
    if (reply.text !== `pong ${i}`) throw new Error(`round ${i}: got '${reply.text}'`);
    if (i <= 3) samples.push(`ping ${i} -> ${reply.text}`);
  }
  times.sort();
  report({ event: 'done', samples, rounds, p50: times[Math.floor(rounds * 0.5)], p99: times[Math.floor(rounds * 0.99)], mean: times.reduce((a, b) => a + b, 0) / rounds });
  dev.close();
  process.disconnect();
}
