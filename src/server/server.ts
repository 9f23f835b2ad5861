import { EventEmitter } from 'node:events';
import { lstatSync, readFileSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { totalmem } from 'node:os';
import { fail, IvshmemError } from '../errors.js';
import { checkMode, OWNER_ONLY } from '../files.js';
import { native, type NativeWatcher } from '../native.js';
import { FdRef, isVectorCount, MAX_VECTORS, MessageSocket, PEER_IDS, sendGone, sendGreeting, sendVector, type QueueLimit } from '../protocol/index.js';
import { fileMemory, sealedMemory, type ServerMemory } from './memory.js';

/** Options of {@link IvshmemServer.listen}. */
export interface ServerOptions {
  /** The UNIX socket QEMU and host peers connect to. */
  socket: string;
  /** Shared-memory size in bytes; rounded up to a power of two (PCI BARs are), at least 4 KiB, at most the machine's memory. Default 4 MiB. */
  size?: number;
  /** Interrupt vectors per peer, 1..64. Default 1. */
  vectors?: number;
  /**
   * A named file to use as the shared memory (created with `mode`, never through a symlink).
   * Default: a memfd sealed against shrinking and growing, which no peer can truncate. A named
   * file cannot promise that: any process that can open it, and every peer it is handed to, can
   * truncate it and kill every process that mapped it with SIGBUS. Use one only among peers that
   * trust each other, or to share the memory with `ivshmem-plain` devices.
   */
  shm?: string;
  /** Reuse `shm` if it exists, keeping its contents. Without it an existing file is an error. */
  reuseShm?: boolean;
  /** Leave the shared-memory file in place on close (it is removed by default when we created it). */
  keepShm?: boolean;
  /**
   * Permission bits of the socket and of a created `shm` file, exactly, whatever the umask.
   * Default 0o600: only this user's processes can connect (and so get the memory). 0o660 lets a group in.
   */
  mode?: number;
  /**
   * What a client may leave unread beyond its own setup: messages, and messages carrying an fd.
   * A client past either is not reading and is dropped. Default 16384 messages, 4096 fds.
   */
  queueLimit?: Partial<QueueLimit>;
  /** Peers served at once, 1..65536 (the protocol's ID space; default 65536). Newcomers beyond are refused. */
  maxPeers?: number;
}

/** A peer as the server sees it. */
export interface ServerPeer {
  /** Its ivshmem peer ID. */
  id: number;
  /** Its interrupt vectors. */
  vectors: number;
}

/** Events of {@link IvshmemServer}. */
export interface ServerEvents {
  /** A peer connected and got its ID. */
  'peer-connected': [peer: ServerPeer];
  /** A peer left; `reason` says how. */
  'peer-disconnected': [peer: ServerPeer, reason: string];
  /** A human-readable line for each connect, disconnect and notable decision. */
  log: [line: string];
  /** The server closed. */
  close: [];
}

interface Client {
  id: number;
  socket: MessageSocket;
  eventfds: FdRef[];
}

const DEFAULT_SIZE = 4 << 20;
const QUEUE_LIMIT: QueueLimit = { messages: 16384, fds: 4096 };

/** Rounds up to a power of two, at least one page: what a PCI BAR can hold. */
export function roundShmSize(size: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `size must be a positive number of bytes, got ${String(size)}`);
  }
  let rounded = 4096;
  while (rounded < size) rounded *= 2;
  return rounded;
}

/**
 * A QEMU-compatible ivshmem-server: QEMU's `ivshmem-doorbell` device and {@link connect} peers
 * connect to its socket, get an ID, the shared memory and one eventfd per vector of every peer.
 *
 * Unlike QEMU's example server it has no fd-count ceiling (libuv polling), queues writes on a
 * full socket instead of dropping them (up to a bound per client: one that does not read is
 * dropped), hands out memory sealed against truncation, creates its socket owner-only whatever
 * the umask, never reuses stale memory unless asked, and cleans up its socket and memory on close.
 *
 * @example
 * ```ts
 * const server = await IvshmemServer.listen({ socket: '/tmp/ivshmem.sock', size: 1 << 20, vectors: 2 });
 * server.on('log', console.log);
 * // qemu-system-x86_64 ... -chardev socket,path=/tmp/ivshmem.sock,id=c -device ivshmem-doorbell,chardev=c,vectors=2
 * await server.close();
 * ```
 */
export class IvshmemServer extends EventEmitter<ServerEvents> {
  /** The UNIX socket it listens on. */
  readonly socketPath: string;
  /**
   * The shared memory's file: the `shm` option, or for the sealed memfd `/proc/PID/fd/N`, which
   * this user's processes can open (and `ivshmem dump` read) while the server runs.
   */
  readonly shmPath: string;
  /** Whether the memory is sealed against shrinking and growing (the default memfd). */
  readonly sealed: boolean;
  /** Bytes of shared memory (a power of two). */
  readonly size: number;
  /** Interrupt vectors per peer. */
  readonly vectors: number;
  #listenFd: number;
  #shm: FdRef;
  #removeShm: string | null;
  readonly #queueLimit: QueueLimit;
  #watcher: NativeWatcher;
  #clients = new Map<number, Client>();
  #lastId = -1;
  readonly #maxPeers: number;
  #closed = false;
  #acceptPause: NodeJS.Timeout | undefined;

  private constructor(options: Required<Pick<ServerOptions, 'socket' | 'size' | 'vectors' | 'maxPeers'>> & { queueLimit: QueueLimit }, listenFd: number, memory: ServerMemory, keepShm: boolean) {
    super();
    this.#maxPeers = options.maxPeers;
    this.#queueLimit = options.queueLimit;
    this.socketPath = options.socket;
    this.shmPath = memory.path ?? `/proc/${process.pid}/fd/${memory.fd}`;
    this.sealed = memory.sealed;
    this.size = options.size;
    this.vectors = options.vectors;
    this.#listenFd = listenFd;
    this.#shm = new FdRef(memory.fd);
    this.#removeShm = memory.created && !keepShm ? memory.path : null;
    this.#watcher = new native.Watcher(listenFd, (error) => this.#accept(error));
    this.#watcher.start(native.READABLE);
  }

  /** Creates the shared memory, binds the socket and starts accepting peers. */
  static async listen(options: ServerOptions): Promise<IvshmemServer> {
    if (typeof options?.socket !== 'string' || options.socket === '') {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'IvshmemServer.listen(): socket must be a path');
    }
    const vectors = options.vectors ?? 1;
    if (!isVectorCount(vectors)) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `vectors must be an integer 1..${MAX_VECTORS}, got ${String(vectors)}`);
    }
    const maxPeers = options.maxPeers ?? PEER_IDS;
    if (!Number.isInteger(maxPeers) || maxPeers < 1 || maxPeers > PEER_IDS) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `maxPeers must be an integer 1..${PEER_IDS}, got ${String(maxPeers)}`);
    }
    const mode = options.mode === undefined ? OWNER_ONLY : checkMode(options.mode, 'IvshmemServer.listen()');
    const queueLimit = checkQueueLimit(options.queueLimit);
    if (options.shm !== undefined && (typeof options.shm !== 'string' || options.shm === '')) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', 'IvshmemServer.listen(): shm must be a path');
    }
    const asked = options.size ?? DEFAULT_SIZE;
    const size = roundShmSize(asked);
    // Every byte may be touched by some peer and must then be backed: more than the machine has
    // is a mistake (a unit typed wrong), and the kernel would answer it with SIGBUS or the OOM killer.
    if (size > totalmem()) {
      fail('ERR_IVSHMEM_SIZE', `IvshmemServer.listen(): size ${size} is more than this machine's memory (${totalmem()} bytes)`);
    }
    const logs: string[] = [];
    if (size !== asked) logs.push(`size ${asked} is not a power of two: using ${size} bytes`);

    const memory = options.shm === undefined ? sealedMemory(size) : fileMemory(options.shm, size, { reuse: options.reuseShm ?? false, mode });
    if (!memory.created) logs.push(`reusing the existing contents of ${memory.path} (reuseShm)`);
    if (!memory.sealed) logs.push(`${memory.path} is a named file: any peer can truncate it and crash the others (SIGBUS); without -M/--shm the memory is sealed, and connect() refuses this one unless given sealedMemory: 'warn'`);
    let listenFd: number;
    try {
      removeStaleSocket(options.socket);
      listenFd = native.socketListen(options.socket, undefined, mode);
    } catch (error) {
      native.close(memory.fd);
      if (memory.created && memory.path) rmSync(memory.path, { force: true });
      throw error;
    }
    const server = new IvshmemServer({ socket: options.socket, size, vectors, maxPeers, queueLimit }, listenFd, memory, options.keepShm ?? false);
    // Deferred so that listeners attached after `await listen()` still see these lines.
    setImmediate(() => {
      for (const line of logs) server.#log(line);
      const where = memory.path ? `in ${memory.path}` : '(a sealed memfd)';
      server.#log(`listening on ${options.socket} (mode 0${mode.toString(8)}): ${size} bytes of shared memory ${where}, ${vectors} vector(s) per peer`);
    });
    return server;
  }

  /** The connected peers, by ascending ID. */
  get peers(): ServerPeer[] {
    return [...this.#clients.values()].sort((a, b) => a.id - b.id).map((c) => ({ id: c.id, vectors: c.eventfds.length }));
  }

  /** Keeps (default) or stops keeping the process alive while listening. */
  ref(on = true): this {
    if (!this.#closed) {
      if (on) this.#watcher.ref();
      else this.#watcher.unref();
    }
    for (const c of this.#clients.values()) c.socket.ref(on);
    return this;
  }

  /** {@link IvshmemServer.close}, for `await using server = await IvshmemServer.listen(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Disconnects every peer, removes the socket file (and the shared memory it created). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    native.close(this.#listenFd);
    rmSync(this.socketPath, { force: true });
    clearTimeout(this.#acceptPause);
    for (const client of [...this.#clients.values()]) this.#drop(client, 'server closing', false);
    this.#shm.release();
    if (this.#removeShm) rmSync(this.#removeShm, { force: true });
    this.#log('closed');
    this.emit('close');
  }

  #log(line: string): void {
    this.emit('log', line);
  }

  #nextId(): number {
    if (this.#clients.size >= this.#maxPeers) return -1;
    // Round-robin, not lowest-free: a departed peer's ID comes back as late as possible, so
    // others have time to see it leave before a newcomer takes it.
    let id = this.#lastId;
    do id = (id + 1) % PEER_IDS;
    while (this.#clients.has(id));
    this.#lastId = id;
    return id;
  }

  #accept(error: string | null): void {
    if (error) {
      this.#log(`accept: ${error}`);
      return;
    }
    for (;;) {
      let fd: number;
      try {
        fd = native.socketAccept(this.#listenFd, this.socketPath);
      } catch (e) {
        // EMFILE and the like: the connection stays pending and the socket stays readable, so
        // stop looking for a while instead of spinning; keep serving those connected.
        this.#log(`accept failed, pausing accepts for 1 s: ${(e as Error).message}`);
        this.#watcher.stop();
        this.#acceptPause = setTimeout(() => !this.#closed && this.#watcher.start(native.READABLE), 1000);
        return;
      }
      if (fd < 0) return;
      this.#welcome(fd);
    }
  }

  #welcome(fd: number): void {
    const id = this.#nextId();
    if (id < 0) {
      this.#log(`refused a connection: ${this.#maxPeers} peers are connected, the most this server serves`);
      native.close(fd);
      return;
    }
    const eventfds: FdRef[] = [];
    try {
      for (let v = 0; v < this.vectors; v++) eventfds.push(new FdRef(native.eventfdCreate()));
    } catch (e) {
      for (const efd of eventfds) efd.release();
      native.close(fd);
      this.#log(`refused peer ${id}: ${(e as Error).message}`);
      return;
    }
    const client: Client = { id, eventfds, socket: null as unknown as MessageSocket };
    client.socket = new MessageSocket(fd, this.socketPath, {
      // The protocol has clients send nothing: any byte is a broken or hostile client.
      message: (_value, extraFd) => {
        if (extraFd >= 0) native.close(extraFd);
        this.#drop(client, 'it sent data (clients must only listen)');
      },
      end: (err) => this.#drop(client, !err || err.code === 'EPIPE' || err.code === 'ECONNRESET' ? 'it hung up' : err.message),
    }, {
      // Its own setup may be long (every vector of every peer); beyond it, the limit.
      messages: 3 + (this.#clients.size + 1) * this.vectors + this.#queueLimit.messages,
      fds: 1 + (this.#clients.size + 1) * this.vectors + this.#queueLimit.fds,
    });

    const s = client.socket;
    sendGreeting(s, id, this.#shm);
    for (const other of this.#clients.values()) {
      for (const efd of other.eventfds) sendVector(s, other.id, efd);
    }
    for (const efd of eventfds) sendVector(s, id, efd);
    for (const other of this.#clients.values()) {
      for (const efd of eventfds) sendVector(other.socket, id, efd);
    }
    this.#clients.set(id, client);
    s.start();
    this.#log(`peer ${id} connected (${this.#clients.size} connected)`);
    this.emit('peer-connected', { id, vectors: eventfds.length });
  }

  #drop(client: Client, reason: string, tell = true): void {
    if (!this.#clients.delete(client.id)) return;
    client.socket.close();
    for (const efd of client.eventfds) efd.release();
    if (tell) {
      for (const other of this.#clients.values()) {
        // A client that has not read about this peer yet never needs to: its vectors are taken
        // back unsent (no fd stays pinned in a slow client's queue), and no goodbye follows.
        if (other.socket.withdraw(client.id) < client.eventfds.length) sendGone(other.socket, client.id);
      }
    }
    this.#log(`peer ${client.id} disconnected: ${reason} (${this.#clients.size} connected)`);
    this.emit('peer-disconnected', { id: client.id, vectors: client.eventfds.length }, reason);
  }
}

function checkQueueLimit(limit: Partial<QueueLimit> | undefined): QueueLimit {
  const out = { ...QUEUE_LIMIT, ...limit };
  for (const key of ['messages', 'fds'] as const) {
    if (!Number.isSafeInteger(out[key]) || out[key] < 1) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `IvshmemServer.listen(): queueLimit.${key} must be a positive integer, got ${String(out[key])}`);
    }
  }
  return out;
}

// A socket file nobody listens on is left over from a crashed server: take its place. One that
// a process listens on belongs to a running server: refuse. The kernel's table of UNIX sockets
// tells which, without connecting (a probe connection would show up at that server as a peer).
function removeStaleSocket(path: string): void {
  let stat;
  try {
    stat = lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) {
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `'${path}' exists and is not a socket: choose another path`, { path });
  }
  if (isListening(path)) {
    fail('ERR_IVSHMEM_ADDRESS_IN_USE', `another server is listening on '${path}'`, { path });
  }
  rmSync(path, { force: true });
}

// /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; flag 0x10000 (__SO_ACCEPTCON)
// marks a listening socket. Paths are as bound, so compare both as given and resolved.
function isListening(path: string): boolean {
  const wanted = new Set([path, resolve(path)]);
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8 || !wanted.has(fields.slice(7).join(' '))) continue;
    if ((parseInt(fields[3]!, 16) & 0x10000) !== 0) return true;
  }
  return false;
}
