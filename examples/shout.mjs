// The host's service, shared by host.mjs and lab-test.mjs: every peer that opens a "shout"
// channel to us gets each of its lines back upper-cased on a "reply" channel, which we end when
// the peer ends its side.
import { utf8Codec } from 'ivshmem';

/** Serves "shout" on `bus` until the bus closes. */
export function answerShouts(bus) {
  bus.on('channel', async (incoming) => {
    if (incoming.name !== 'shout') return;
    const lines = incoming.accept({ codec: utf8Codec });
    const reply = bus.open(incoming.from, 'reply', { codec: utf8Codec });
    try {
      for await (const line of lines) await reply.send(line.toUpperCase());
      reply.close();
    } catch (error) {
      // The peer left (ERR_IVSHMEM_PEER_GONE) or our bus closed: nothing more to answer.
      if (!bus.closed) console.error(`shout from ${incoming.from.name}: ${error.message}`);
    }
  });
}
