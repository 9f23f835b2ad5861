// The package's entry points as a user imports them (package.json "exports", built dist/).
import { describe, expect, it } from 'vitest';

describe('entry points', () => {
  it('ivshmem: the API, without wire constants or CLI helpers', async () => {
    const root = await import('ivshmem');
    for (const name of ['openDevice', 'connect', 'openFile', 'IvshmemServer', 'attach', 'Bus', 'ChannelWriter', 'ChannelReader', 'IvshmemError', 'ringSize']) {
      expect(root, name).toHaveProperty(name);
    }
    for (const name of ['formatDevices', 'roundShmSize', 'RING_MAGIC', 'RING_HEADER_SIZE', 'RECORD_TYPE_PADDING', 'SLOT', 'MAX_VECTORS', 'recordSize']) {
      expect(root, name).not.toHaveProperty(name);
    }
  });

  it('ivshmem/spec: the formats’ numbers', async () => {
    const spec = await import('ivshmem/spec');
    expect(spec.RING_FIELDS).toMatchObject({ magic: 0, tail: 128, producerWait: 256, head: 384, consumerWait: 512, data: 640 });
    expect(spec.RING_HEADER_SIZE).toBe(640);
    expect([spec.DOORBELL_BURST, spec.DOORBELL_EVERY_MS]).toEqual([64, 0.02]); // SPEC 2.7
    expect(spec.SUPERBLOCK_SIZE).toBe(4096);
    expect(spec.MAX_VECTORS).toBe(64);
    expect(spec.PEER_IDS).toBe(65536);
    expect(spec.doorbellValue(3, 1)).toBe(0x30001);
  });

  it('ivshmem/testing: the lab', async () => {
    const testing = await import('ivshmem/testing');
    expect(testing).toHaveProperty('startLab');
    expect(testing).toHaveProperty('LabError');
  });
});
