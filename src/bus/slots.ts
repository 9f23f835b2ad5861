// The peer table and the directories: reading other peers' slots and entries (each copied once,
// then checked against the geometry), writing our own, and the slot-claim protocol. Every write
// to a slot or an entry, and every atomic on them, is here.
import { ENTRY, ENTRY_SIZE, ENTRY_STATE, NAME_MAX, NO_DOORBELL, PERIOD_MAX, PERIOD_MIN, SLOT, SLOT_SIZE, SLOT_STATE } from './layout.js';
import { entryOffset, ringArea, slotOffset, type Geometry } from './region.js';

const decoder = new TextDecoder('utf-8', { fatal: false });
const encoder = new TextEncoder();

/** A validated copy of one peer slot. `problem` says why a slot in use is unusable. */
export interface SlotCopy {
  owner: number;
  published: number;
  state: number;
  deviceId: number | null;
  vectors: number;
  heartbeat: number;
  period: number;
  directoryGeneration: number;
  name: string;
  problem: string | null;
  /**
   * False when `owner` or `published` changed while the slot was copied (it changed hands): the
   * other fields may be another session's, and `published` is then reported as 0 (SPEC 3.3).
   */
  stable: boolean;
}

/** A validated copy of one directory entry addressed to somebody. */
export interface EntryCopy {
  index: number;
  state: number;
  serial: number;
  destinationSlot: number;
  destinationSession: number;
  ringOffset: number;
  ringSize: number;
  vector: number;
  name: string;
  problem: string | null;
}

function words(memory: ArrayBuffer, offset: number, bytes: number): Uint32Array {
  return new Uint32Array(memory, offset, bytes / 4);
}

function copyName(memory: ArrayBuffer, at: number, length: number): string {
  return decoder.decode(new Uint8Array(memory, at, length).slice());
}

/** Copies slot `i` once and validates the copy. */
export function readSlot(memory: ArrayBuffer, g: Geometry, i: number): SlotCopy {
  const base = slotOffset(g, i);
  const live = words(memory, base, SLOT_SIZE);
  const owner = Atomics.load(live, SLOT.owner / 4);
  const published = Atomics.load(live, SLOT.published / 4);
  const state = Atomics.load(live, SLOT.state / 4);
  const c = live.slice(0, SLOT.name / 4);
  const rawDevice = c[SLOT.deviceId / 4]!;
  const vectors = c[SLOT.vectors / 4]!;
  const period = c[SLOT.period / 4]!;
  const nameLength = c[SLOT.nameLength / 4]!;
  let problem: string | null = null;
  if (state > SLOT_STATE.leaving) problem = `state ${state}`;
  else if (rawDevice !== NO_DOORBELL && rawDevice > 0xffff) problem = `device ID ${rawDevice}`;
  else if (vectors > 256) problem = `vectors ${vectors}`;
  else if (period < PERIOD_MIN || period > PERIOD_MAX) problem = `heartbeat period ${period} ms`;
  else if (nameLength > NAME_MAX) problem = `name length ${nameLength}`;
  const name = problem || nameLength === 0 ? '' : copyName(memory, base + SLOT.name, nameLength);
  // Loaded again after the copy: a slot freed and claimed by a new session meanwhile has new
  // fields, possibly half written, under what looked like the old owner's published slot.
  const stable = Atomics.load(live, SLOT.owner / 4) === owner && Atomics.load(live, SLOT.published / 4) === published;
  return {
    owner,
    published: stable ? published : 0,
    state,
    deviceId: rawDevice === NO_DOORBELL ? null : rawDevice,
    vectors,
    heartbeat: c[SLOT.heartbeat / 4]!,
    period,
    directoryGeneration: c[SLOT.directoryGeneration / 4]!,
    name,
    problem,
    stable,
  };
}

/** Our own slot's fields, written once at join (the owner word is claimed separately). */
function writeSlot(memory: ArrayBuffer, g: Geometry, i: number, fields: { deviceId: number | null; vectors: number; period: number; name: string }): void {
  const base = slotOffset(g, i);
  const w = words(memory, base, SLOT_SIZE);
  const name = encoder.encode(fields.name);
  w[SLOT.deviceId / 4] = fields.deviceId ?? NO_DOORBELL;
  w[SLOT.vectors / 4] = fields.vectors;
  w[SLOT.period / 4] = fields.period;
  w[SLOT.heartbeat / 4] = 0;
  w[SLOT.directoryGeneration / 4] = 0;
  new Uint8Array(memory, base + SLOT.name, NAME_MAX).fill(0).set(name);
  w[SLOT.nameLength / 4] = name.length;
}

function slotWords(memory: ArrayBuffer, g: Geometry, i: number): Uint32Array {
  return words(memory, slotOffset(g, i), SLOT_SIZE);
}

/** The session holding slot `i` (0: free). */
export function slotOwner(memory: ArrayBuffer, g: Geometry, i: number): number {
  return Atomics.load(slotWords(memory, g, i), SLOT.owner / 4);
}

/**
 * Frees slot `i` if `session` still holds it. The compare-exchange fails harmlessly when the
 * holder already left or another observer freed it first.
 */
export function releaseSlot(memory: ArrayBuffer, g: Geometry, i: number, session: number): void {
  Atomics.compareExchange(slotWords(memory, g, i), SLOT.owner / 4, session, 0);
}

/**
 * Claims a free slot for `session`: the first the compare-exchange wins, or -1 when every slot
 * is taken. A slot still held under our own device ID belongs to a dead previous incarnation
 * of this peer (device IDs are unique among the peers a server has connected): it is freed first.
 */
export function claimSlot(memory: ArrayBuffer, g: Geometry, session: number, deviceId: number | null): number {
  if (deviceId !== null) {
    for (let i = 0; i < g.maxPeers; i++) {
      const copy = readSlot(memory, g, i);
      if (copy.owner !== 0 && copy.deviceId === deviceId) releaseSlot(memory, g, i, copy.owner);
    }
  }
  for (let i = 0; i < g.maxPeers; i++) {
    if (Atomics.compareExchange(slotWords(memory, g, i), SLOT.owner / 4, 0, session) === 0) return i;
  }
  return -1;
}

/**
 * Fills our claimed slot and makes it visible: joining, the fields, an empty directory (our
 * section may hold a previous owner's), up, and `published` last (until it equals `owner`, the
 * other fields may still be a previous owner's).
 */
export function publishSlot(
  memory: ArrayBuffer,
  g: Geometry,
  i: number,
  session: number,
  fields: { deviceId: number | null; vectors: number; period: number; name: string },
): void {
  const w = slotWords(memory, g, i);
  Atomics.store(w, SLOT.state / 4, SLOT_STATE.joining);
  writeSlot(memory, g, i, fields);
  for (let e = 0; e < g.entries; e++) setEntryState(memory, g, i, e, ENTRY_STATE.free);
  Atomics.store(w, SLOT.state / 4, SLOT_STATE.up);
  Atomics.store(w, SLOT.published / 4, session);
}

/** Marks our slot as leaving (before its channels close and it is released). */
export function markLeaving(memory: ArrayBuffer, g: Geometry, i: number): void {
  Atomics.store(slotWords(memory, g, i), SLOT.state / 4, SLOT_STATE.leaving);
}

/** Stores our heartbeat counter. */
export function storeHeartbeat(memory: ArrayBuffer, g: Geometry, i: number, value: number): void {
  Atomics.store(slotWords(memory, g, i), SLOT.heartbeat / 4, value);
}

/** Stores our directory generation, after a change to our directory. */
export function storeDirectoryGeneration(memory: ArrayBuffer, g: Geometry, i: number, value: number): void {
  Atomics.store(slotWords(memory, g, i), SLOT.directoryGeneration / 4, value);
}

/** Copies entry `e` of slot `owner`'s directory once and validates the copy against that section. */
export function readEntry(memory: ArrayBuffer, g: Geometry, owner: number, e: number, minRing: number): EntryCopy {
  const base = entryOffset(g, owner, e);
  const live = words(memory, base, ENTRY_SIZE);
  const state = Atomics.load(live, ENTRY.state / 4);
  const c = live.slice(0, ENTRY.name / 4);
  const [start, end] = ringArea(g, owner);
  // Stored relative to the region (the same for every peer); used absolute, like Geometry's.
  const ringOffset = g.base + c[ENTRY.ringOffset / 4]!;
  const ringSize = c[ENTRY.ringSize / 4]!;
  const nameLength = c[ENTRY.nameLength / 4]!;
  const vector = c[ENTRY.vector / 4]!;
  const destinationSlot = c[ENTRY.destinationSlot / 4]!;
  let problem: string | null = null;
  if (state > ENTRY_STATE.closed) problem = `state ${state}`;
  else if (destinationSlot >= g.maxPeers) problem = `destination slot ${destinationSlot}`;
  else if (ringOffset % 8 !== 0 || ringSize % 8 !== 0 || ringSize < minRing || ringOffset < start || ringOffset + ringSize > end) {
    problem = `ring at ${ringOffset}+${ringSize} outside its section [${start}, ${end})`;
  } else if (vector > 255) problem = `vector ${vector}`;
  else if (nameLength === 0 || nameLength > NAME_MAX) problem = `name length ${nameLength}`;
  return {
    index: e,
    state,
    serial: c[ENTRY.serial / 4]!,
    destinationSlot,
    destinationSession: c[ENTRY.destinationSession / 4]!,
    ringOffset,
    ringSize,
    vector,
    name: problem ? '' : copyName(memory, base + ENTRY.name, nameLength),
    problem,
  };
}

/** Writes entry `e` of our own directory and publishes it (state last). */
export function writeEntry(
  memory: ArrayBuffer,
  g: Geometry,
  owner: number,
  e: number,
  fields: { serial: number; destinationSlot: number; destinationSession: number; ringOffset: number; ringSize: number; vector: number; name: string },
): void {
  const base = entryOffset(g, owner, e);
  const w = words(memory, base, ENTRY_SIZE);
  const name = encoder.encode(fields.name);
  Atomics.store(w, ENTRY.state / 4, ENTRY_STATE.free);
  w[ENTRY.serial / 4] = fields.serial;
  w[ENTRY.destinationSlot / 4] = fields.destinationSlot;
  w[ENTRY.destinationSession / 4] = fields.destinationSession;
  w[ENTRY.ringOffset / 4] = fields.ringOffset - g.base;
  w[ENTRY.ringSize / 4] = fields.ringSize;
  w[ENTRY.vector / 4] = fields.vector;
  new Uint8Array(memory, base + ENTRY.name, NAME_MAX).fill(0).set(name);
  w[ENTRY.nameLength / 4] = name.length;
  Atomics.store(w, ENTRY.state / 4, ENTRY_STATE.open);
}

/** Sets the state of entry `e` of our own directory. */
export function setEntryState(memory: ArrayBuffer, g: Geometry, owner: number, e: number, state: number): void {
  Atomics.store(words(memory, entryOffset(g, owner, e), ENTRY_SIZE), ENTRY.state / 4, state);
}

/** Encoded length of a name, for checks before writing. */
export function nameBytes(name: string): number {
  return encoder.encode(name).length;
}
