import { EventEmitter } from 'node:events';
import { constants, lstatSync, readFileSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fail, IvshmemError, withPath } from '../errors.js';
import { native, type NativeWatcher } from '../native.js';
import { FdRef, isVectorCount, MAX_VECTORS, MessageSocket, PEER_IDS, sendGone, sendGreeting, sendVector } from '../protocol/index.js';

/** Options of {@link IvshmemServer.listen}. */
export interface ServerOptions {
  /** The UNIX socket QEMU and host peers connect to. */
  socket: string;
  /** Shared-memory size in bytes; rounded up to a power of two (PCI BARs are), at least 4 KiB. Default 4 MiB. */
  size?: number;
  /** Interrupt vectors per peer, 1..64. Default 1. */
  vectors?: number;
  /** The shared-memory file to create. Default: a new file under /dev/shm, removed on close. */
  shm?: string;
  /** Reuse `shm` if it exists, keeping its contents. Without it an existing file is an error. */
  reuseShm?: boolean;
  /** Leave the shared-memory file in place on close (it is removed by default when we created it). */
  keepShm?: boolean;
  /** Peers served at once, 1..65536 (the protocol's ID space; default 65536). Newcomers beyond are refused. */
  maxPeers?: number;
}

/** A peer as the server sees it. */
export interface ServerPeer {
  id: number;
  vectors: number;
}

/** Events of {@link IvshmemServer}. */
export interface ServerEvents {
  'peer-connected': [peer: ServerPeer];
  'peer-disconnected': [peer: ServerPeer, reason: string];
  /** A human-readable line for each connect, disconnect and notable decision. */
  log: [line: string];
  close: [];
}

interface Client {
  id: number;
  socket: MessageSocket;
  eventfds: FdRef[];
}

const DEFAULT_SIZE = 4 << 20;
// A peer that leaves this many messages unread (4096 peers' worth of 64 vectors) is not reading.
const QUEUE_LIMIT = 1 << 18;

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
 * full socket instead of dropping them, never reuses stale memory unless asked, and cleans up its
 * socket and memory on close.
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
  readonly socketPath: string;
  readonly shmPath: string;
  readonly size: number;
  readonly vectors: number;
  #listenFd: number;
  #shm: FdRef;
  #removeShm: boolean;
  #watcher: NativeWatcher;
  #clients = new Map<number, Client>();
  #lastId = -1;
  readonly #maxPeers: number;
  #closed = false;
  #acceptPause: NodeJS.Timeout | undefined;

  private constructor(options: Required<Pick<ServerOptions, 'socket' | 'size' | 'vectors' | 'maxPeers'>> & { shm: string }, fds: { listen: number; shm: number }, removeShm: boolean) {
    super();
    this.#maxPeers = options.maxPeers;
    this.socketPath = options.socket;
    this.shmPath = options.shm;
    this.size = options.size;
    this.vectors = options.vectors;
    this.#listenFd = fds.listen;
    this.#shm = new FdRef(fds.shm);
    this.#removeShm = removeShm;
    this.#watcher = new native.Watcher(fds.listen, (error) => this.#accept(error));
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
    const asked = options.size ?? DEFAULT_SIZE;
    const size = roundShmSize(asked);
    const shm = options.shm ?? `/dev/shm/ivshmem-${process.pid}-${randomBytes(4).toString('hex')}`;
    const logs: string[] = [];
    if (size !== asked) logs.push(`size ${asked} is not a power of two: using ${size} bytes`);

    const { fd: shmFd, created } = openShm(shm, size, options.reuseShm ?? false);
    if (!created) logs.push(`reusing the existing contents of ${shm} (reuseShm)`);
    let listenFd: number;
    try {
      removeStaleSocket(options.socket);
      listenFd = native.socketListen(options.socket);
    } catch (error) {
      native.close(shmFd);
      if (created) rmSync(shm, { force: true });
      throw error;
    }
    const server = new IvshmemServer({ socket: options.socket, size, vectors, shm, maxPeers }, { listen: listenFd, shm: shmFd }, created && !options.keepShm);
    // Deferred so that listeners attached after `await listen()` still see these lines.
    setImmediate(() => {
      for (const line of logs) server.#log(line);
      server.#log(`listening on ${options.socket}: ${size} bytes of shared memory in ${shm}, ${vectors} vector(s) per peer`);
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
    if (this.#removeShm) rmSync(this.shmPath, { force: true });
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
    }, QUEUE_LIMIT);

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
    if (tell) for (const other of this.#clients.values()) sendGone(other.socket, client.id);
    this.#log(`peer ${client.id} disconnected: ${reason} (${this.#clients.size} connected)`);
    this.emit('peer-disconnected', { id: client.id, vectors: client.eventfds.length }, reason);
  }
}

function openShm(path: string, size: number, reuse: boolean): { fd: number; created: boolean } {
  let fd: number;
  let created = true;
  try {
    fd = native.open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    if ((error as IvshmemError).code !== 'EEXIST') throw error;
    if (!reuse) {
      fail('ERR_IVSHMEM_INVALID_ARGUMENT', `shared memory '${path}' already exists: remove it, or pass reuseShm (--reuse-shm) to keep its contents`, { path });
    }
    fd = native.open(path, constants.O_RDWR);
    created = false;
  }
  try {
    const existing = created ? 0 : native.fstat(fd, path).size;
    // Shrinking a file that others may have mapped would kill them with SIGBUS.
    if (existing > size) {
      fail('ERR_IVSHMEM_SIZE', `shared memory '${path}' is ${existing} bytes, larger than the ${size} asked for: reuse it with its own size (--size ${existing}) or remove it`, { path });
    }
    if (existing < size) native.ftruncate(fd, size, path);
  } catch (error) {
    native.close(fd);
    if (created) rmSync(path, { force: true });
    throw withPath(error, path);
  }
  return { fd, created };
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
