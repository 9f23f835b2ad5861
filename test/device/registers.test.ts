import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DOORBELL, doorbellValue, doorbellWriter } from '../../src/device/registers.js';
import { openFile } from '../../src/device/file.js';
import { native } from '../../src/native.js';
import { shmPath } from '../helpers.js';

describe('doorbell register writer', () => {
  it('writes exactly the 4 bytes of the doorbell register of a mapped window, nothing around them', () => {
    // A mapped file stands in for BAR0: same kind of external ArrayBuffer over mmap'd memory.
    const path = shmPath('bar0');
    const window = openFile(path, { size: 4096, create: true });
    try {
      const bytes = new Uint8Array(window.memory, 0, 256).fill(0xee);
      doorbellWriter(window.memory, native)(doorbellValue(0x1234, 7));
      expect(native.read32(window.memory, DOORBELL)).toBe(0x12340007);
      expect([...bytes.subarray(0, DOORBELL)].every((b) => b === 0xee)).toBe(true);
      expect([...bytes.subarray(DOORBELL + 4, 256)].every((b) => b === 0xee)).toBe(true);
    } finally {
      window.close();
      rmSync(path, { force: true });
    }
  });
});
