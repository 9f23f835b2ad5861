// A process that starts a lab and a guest, then dies in one of several ways; the test checks
// that nothing it started is left behind. Usage: lab-child.mjs <signal|exit|throw|kill>
import { join } from 'node:path';
import { startLab } from '../../dist/testing/index.js';

const mode = process.argv[2];
const lab = await startLab({ guests: [{ name: 'x', devices: [{ kind: 'doorbell' }, { kind: 'plain' }] }], });
const server = lab.server();
server.once('peer-connected', () => {
  console.log(JSON.stringify({ dir: lab.dir, socket: lab.socketPath(), shm: lab.shmPath(), serverShm: server.shmPath }));
  // A moment for the test to see QEMU running first.
  if (mode === 'exit') setTimeout(() => process.exit(3), 500);
  if (mode === 'throw') setTimeout(() => { throw new Error('a test failed badly'); }, 500);
  // signal, kill: wait for the test's SIGTERM or SIGKILL.
});
void lab.run({ x: { script: join(import.meta.dirname, '..', 'fixtures', 'guest-sysfs.mjs'), args: ['1'] } });
