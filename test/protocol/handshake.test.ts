// The client's setup as a state machine, fed messages directly (the scripted-server tests in
// scripted-server.test.ts drive it through a real socket).
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native.js';
import { ClientHandshake, MAX_VECTORS } from '../../src/protocol/index.js';
import { openFdCount } from '../helpers.js';

// Sealed as our server seals its memory: an unsealed one is refused by default.
function memfd(size: number): number {
  const fd = native.memfdCreateSealable('handshake');
  native.ftruncate(fd, size);
  native.addSeals(fd, native.seals.SHRINK | native.seals.GROW | native.seals.SEAL);
  return fd;
}

describe('ClientHandshake', () => {
  it('walks version, ID, memory, peers and own vectors to a result it hands over', () => {
    const h = new ClientHandshake('sock', 2);
    expect(h.receive(0, -1)).toBe('more');
    expect(h.receive(7, -1)).toBe('more');
    expect(h.receive(-1, memfd(4096))).toBe('more');
    expect(h.stage).toBe('peers');
    expect(h.receive(3, native.eventfdCreate())).toBe('more');
    expect(h.receive(7, native.eventfdCreate())).toBe('more');
    expect(h.receive(7, native.eventfdCreate())).toBe('done');
    const setup = h.finish()!;
    expect(setup.id).toBe(7);
    expect(setup.memory.byteLength).toBe(4096);
    expect(setup.own).toHaveLength(2);
    expect([...setup.peers.keys()]).toEqual([3]);
    expect(h.finish()).toBeNull();
    for (const fd of [...setup.own, ...setup.peers.get(3)!]) native.close(fd);
    native.unmap(setup.memory);
  });

  it('without a vector count, asks to settle after each own vector', () => {
    const h = new ClientHandshake('sock');
    h.receive(0, -1);
    h.receive(1, -1);
    h.receive(-1, memfd(4096));
    expect(h.receive(1, native.eventfdCreate())).toBe('settle');
    h.dispose();
  });

  it('refuses violations with typed errors, closing the message fd, and dispose() frees the rest', () => {
    const before = openFdCount();
    const h = new ClientHandshake('sock');
    expect(() => h.receive(1, -1)).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_PROTOCOL', path: 'sock' }));
    h.dispose();

    const g = new ClientHandshake('sock');
    g.receive(0, -1);
    g.receive(1, -1);
    g.receive(-1, memfd(4096));
    g.receive(2, native.eventfdCreate());
    for (let v = 0; v < MAX_VECTORS; v++) g.receive(1, native.eventfdCreate());
    expect(() => g.receive(1, native.eventfdCreate())).toThrow(/more than 64 vectors/);
    g.dispose();
    expect(openFdCount()).toBe(before);
  });

  it('refuses an empty shared memory', () => {
    const before = openFdCount();
    const h = new ClientHandshake('sock');
    h.receive(0, -1);
    h.receive(1, -1);
    expect(() => h.receive(-1, memfd(0))).toThrow(/the shared memory is empty/);
    h.dispose();
    expect(openFdCount()).toBe(before);
  });
});
