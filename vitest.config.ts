import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Each test file in its own process: native handles and mappings never leak between files.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
