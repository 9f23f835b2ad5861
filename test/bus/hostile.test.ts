// A hostile peer scribbles over the peer table, the directories and the superblock while two
// honest peers run: they may see peers come and go and channels fail, but only with typed
// errors, and nothing is read or written outside the region's own bytes.
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { attach, IvshmemError, openFile, utf8Codec, type Bus } from '../../src/index.js';
import { shmPath } from '../helpers.js';

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
}

describe('a hostile peer on the bus', () => {
  it('cannot crash honest peers by scribbling over slots, entries and the superblock', async () => {
    const path = shmPath('hostile');
    const size = 1 << 20;
    const setup = openFile(path, { size, create: true });
    const devA = openFile(path);
    const devB = openFile(path);
    const errors: unknown[] = [];
    const uncaught = (e: unknown): void => void errors.push(e);
    process.on('uncaughtException', uncaught);
    const buses: Bus[] = [];
    try {
      const a = await attach(devA, { name: 'a', heartbeat: 20 });
      const b = await attach(devB, { name: 'b', heartbeat: 20 });
      buses.push(a, b);
      for (const bus of buses) bus.on('error', (e) => errors.push(e));
      const g = a.geometry;
      const words = new Uint32Array(setup.memory);
      const random = prng(0x1badf00d);
      const interesting = [0, 1, 2, 3, 0xffffffff, 0x7fffffff, g.sectionsOffset, g.sectionSize, size, size - 8, 4096, 65536];
      const value = (): number => (random() % 3 === 0 ? interesting[random() % interesting.length]! : random());

      // Channels keep flowing between the honest peers while the hostile one scribbles.
      let delivered = 0;
      let stop = false;
      let channelErrors = 0;
      const w = a.open(await a.waitForPeer('b'), 'flow', { codec: utf8Codec });
      const r = await b.accept('flow', { codec: utf8Codec });
      const traffic = (async () => {
        try {
          for (let i = 0; !stop; i++) {
            // Let the scribbler run between messages.
            if (i % 20 === 0) await new Promise((r) => setImmediate(r));
            await w.send(`m${i}`);
            const got = await r.receive();
            if (got !== `m${i}`) throw new Error(`torn or reordered: ${got} for m${i}`);
            delivered++;
          }
        } catch (error) {
          if (!(error instanceof IvshmemError)) throw error;
          channelErrors++;
        }
      })();

      let mutations = 0;
      const deadline = performance.now() + 1500;
      while (performance.now() < deadline) {
        // Mostly the table and the directories, sometimes the superblock (already copied).
        for (let n = 0; n < 50; n++) {
          const where = random() % 10;
          let word: number;
          if (where < 4) word = (g.tableOffset + (random() % (g.maxPeers * 256))) / 4;
          else if (where < 8) word = (g.sectionsOffset + (random() % g.maxPeers) * g.sectionSize + (random() % (g.entries * 128))) / 4;
          else word = random() % 16;
          words[Math.floor(word)] = value();
          mutations++;
        }
        await new Promise((r) => setTimeout(r, 1));
      }
      stop = true;
      await traffic;
      console.log(`hostile bus: ${mutations} mutations, ${delivered} messages delivered intact, ${channelErrors} channel failure(s)`);
      expect(mutations).toBeGreaterThan(10_000);
      for (const e of errors) expect(e).toBeInstanceOf(IvshmemError);
    } finally {
      process.off('uncaughtException', uncaught);
      for (const bus of buses) bus.close();
      devA.close();
      devB.close();
      setup.close();
      rmSync(path, { force: true });
    }
  });
});
