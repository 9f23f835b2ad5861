// Point-to-point virtio-net links between lab guests. QEMU carries the Ethernet frames over a
// socket of its own between the two QEMU processes, so the traffic never reaches a host network.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { LabError } from './errors.js';
import type { GuestNet } from './guest.js';

/** How QEMU carries a link: `-netdev stream` (Unix socket, QEMU 7.2+) or `-netdev socket` (loopback TCP). */
export type NetBackend = GuestNet['backend'];

let detected: NetBackend | undefined;

/** `stream` when this QEMU has `-netdev stream`, else `socket`. */
export function detectNetBackend(qemu = 'qemu-system-x86_64'): NetBackend {
  if (detected) return detected;
  const help = spawnSync(qemu, ['-netdev', 'help'], { encoding: 'utf8' });
  detected = /^stream$/m.test(`${help.stdout}\n${help.stderr}`) ? 'stream' : 'socket';
  return detected;
}

/** Checks an `a.b.c.d/prefix` address for a guest's eth0; returns it. */
export function checkNetAddress(address: unknown, guest: string): string {
  const match = typeof address === 'string' ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(address) : null;
  const octets = match?.slice(1, 5).map(Number) ?? [];
  const prefix = Number(match?.[5]);
  if (!match || octets.some((o) => o > 255) || prefix < 1 || prefix > 30) {
    throw new LabError(`guest ${guest}: net.address must be an IPv4 address with a prefix of 1..30, like 10.0.0.1/24; got ${JSON.stringify(address)}`);
  }
  return address as string;
}

/** A distinct, locally administered MAC for the guest at `index`. */
export function guestMac(index: number): string {
  return `52:54:00:1a:${((index >> 8) & 0xff).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}`;
}

/** A TCP port on 127.0.0.1 that was free a moment ago, for a `-netdev socket` listener. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * True once the listening end of a link accepts connections. A probe connection would be taken
 * as the peer by `-netdev socket`, so the socket is looked for, not connected to.
 */
export function netListening(net: GuestNet): boolean {
  if (net.backend === 'stream') return existsSync(net.endpoint);
  const port = Number(net.endpoint).toString(16).toUpperCase().padStart(4, '0');
  try {
    // /proc/net/tcp: "sl local_address rem_address st ...", 0100007F = 127.0.0.1, 0A = LISTEN.
    return readFileSync('/proc/net/tcp', 'utf8').split('\n').some((line) => line.trim().split(/\s+/)[1] === `0100007F:${port}` && line.trim().split(/\s+/)[3] === '0A');
  } catch {
    return false;
  }
}
