// Whatever the lab starts or creates is registered here, so QEMU processes, sockets and shm files
// go away even when a test throws, the process exits early, or someone presses Ctrl-C.
// Cleanups are synchronous: an 'exit' listener cannot wait for anything.

type Cleanup = () => void;

const pending = new Set<Cleanup>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let installed = false;

function runAll(): void {
  for (const cleanup of [...pending]) {
    pending.delete(cleanup);
    try {
      cleanup();
    } catch {
      // Best effort: one failure must not keep the others from running.
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  uninstall();
  // Only take the default action (terminate) if nobody else handles the signal: a test runner
  // with its own handler decides for itself.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const signal of SIGNALS) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', runAll);
  for (const signal of SIGNALS) process.off(signal, onSignal);
}

/**
 * Registers a synchronous cleanup that runs on exit or SIGINT/SIGTERM/SIGHUP unless it ran
 * before. Returns a function that runs it now (once) and unregisters it.
 */
export function onCleanup(cleanup: Cleanup): () => void {
  let done = false;
  const once = (): void => {
    if (done) return;
    done = true;
    pending.delete(once);
    if (pending.size === 0) uninstall();
    cleanup();
  };
  pending.add(once);
  install();
  return once;
}
