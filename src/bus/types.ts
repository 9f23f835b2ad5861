import type { ChannelReader, Codec } from '../channel/index.js';
import type { Geometry } from './region.js';

/** Another peer on the bus (or this one: {@link Bus.self}). */
export interface BusPeer {
  /** Its slot in the peer table: the bus address of the peer. */
  readonly slot: number;
  /** Random per attach: a restarted peer is a new session, even in the same slot. */
  readonly session: number;
  /** The name it attached with. */
  readonly name: string;
  /** Its ivshmem peer ID, or null without doorbells. */
  readonly deviceId: number | null;
  /** Vectors it can be woken on (0: it polls). */
  readonly vectors: number;
}

/** Why a peer is down. */
export type PeerDownReason = 'left' | 'heartbeat' | 'disconnected' | 'replaced' | 'corrupt';

/** A channel another peer opened to us, not yet accepted. */
export interface IncomingChannel {
  /** The peer that opened it. */
  readonly from: BusPeer;
  /** The channel's name. */
  readonly name: string;
  /** Takes the channel: its reader, decoding with `codec`. */
  accept<T = Uint8Array>(options?: { codec?: Codec<T> }): ChannelReader<T>;
}

/** Events of a {@link Bus}. */
export interface BusEvents {
  /** A peer attached (or was already there when we did). */
  'peer-up': [peer: BusPeer];
  /** A peer left, or was found dead. */
  'peer-down': [peer: BusPeer, reason: PeerDownReason];
  /** A channel was opened to us and nobody was waiting in {@link Bus.accept} for its name. */
  channel: [channel: IncomingChannel];
  /**
   * The bus failed on its own and is closed: this peer lost its slot (declared dead by the
   * others while stalled, or freed by a hostile peer), or something its timers and events ran
   * threw (a shared-memory state no check foresaw, or a listener of this bus that threw; the
   * original is the error's `cause`). Emitted only when somebody listens, so that a failure
   * never ends the process: `close` carries it too.
   */
  error: [error: Error];
  /** The bus closed: by {@link Bus.close} (no error), or because of `error`. */
  close: [error?: Error];
}

/** The shared parts every concern of a bus works on. */
export interface BusContext {
  readonly memory: ArrayBuffer;
  readonly geometry: Geometry;
  readonly self: BusPeer;
}

/** Whether two views of a peer are the same session of it. */
export function samePeer(a: BusPeer, b: BusPeer): boolean {
  return a.slot === b.slot && a.session === b.session;
}
