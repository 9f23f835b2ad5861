import { constants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { fail, IvshmemError, ivshmemError } from '../src/errors.js';
import { LabError } from '../src/testing/errors.js';

describe('errors', () => {
  it('an errno code carries its errno; a library code carries none', () => {
    const sys = ivshmemError('ENOENT', 'gone', { syscall: 'open', path: '/x' });
    expect(sys).toBeInstanceOf(IvshmemError);
    expect(sys).toMatchObject({ code: 'ENOENT', errno: constants.errno.ENOENT, syscall: 'open', path: '/x', message: 'gone' });
    const lib = ivshmemError('ERR_IVSHMEM_TIMEOUT', 'late');
    expect(lib.errno).toBeUndefined();
    expect(() => fail('ERR_IVSHMEM_SIZE', 'too big')).toThrow(expect.objectContaining({ code: 'ERR_IVSHMEM_SIZE', message: 'too big' }));
  });

  it('lab failures are typed library errors', () => {
    const error = new LabError('no image', { console: 'log' });
    expect(error).toBeInstanceOf(IvshmemError);
    expect(error).toMatchObject({ name: 'LabError', code: 'ERR_IVSHMEM_LAB', console: 'log' });
  });
});
