import { defineConfig } from 'vitest/config';

// Tests that start QEMU are named *.qemu.test.ts. `npm run test:unit` runs the others (still real
// fds, mappings, processes and sockets, no guest); `npm test` runs both projects.
const QEMU = 'test/**/*.qemu.test.ts';

export default defineConfig({
  test: {
    // Each test file in its own process: native handles and mappings never leak between files.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: [QEMU] } },
      { extends: true, test: { name: 'qemu', include: [QEMU] } },
    ],
  },
});
