// Progress of long work (a kernel download, guest boots): on a terminal one live line with a
// spinner and the elapsed time, each finished step left behind with a check mark; elsewhere
// (pipes, CI logs, TERM=dumb) plain lines. NO_COLOR turns colours off, not the spinner.
import { hrtime } from 'node:process';

/** Reports steps of long work; `done()` ends the last one (and stops the spinner). */
export interface Progress {
  step(text: string): void;
  done(): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** A progress reporter writing to `stream` (standard error by default), prefixed with `prefix`. */
export function progress(prefix: string, stream: NodeJS.WriteStream = process.stderr, env: NodeJS.ProcessEnv = process.env): Progress {
  if (!stream.isTTY || env.TERM === 'dumb') {
    return { step: (text) => stream.write(`${prefix}: ${text}\n`), done: () => {} };
  }
  const color = env.NO_COLOR === undefined || env.NO_COLOR === '';
  const paint = (code: number, text: string): string => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  let current: string | null = null;
  let started = 0n;
  let frame = 0;
  const seconds = (): string => `${(Number(hrtime.bigint() - started) / 1e9).toFixed(1)} s`;
  const draw = (): void => {
    if (current === null) return;
    frame = (frame + 1) % FRAMES.length;
    stream.write(`\r${paint(36, FRAMES[frame]!)} ${prefix}: ${current} ${paint(2, `(${seconds()})`)}\x1b[K`);
  };
  const finish = (): void => {
    if (current !== null) stream.write(`\r${paint(32, '✓')} ${prefix}: ${current} ${paint(2, `(${seconds()})`)}\x1b[K\n`);
    current = null;
  };
  const timer = setInterval(draw, 100);
  timer.unref();
  return {
    step(text) {
      finish();
      current = text;
      started = hrtime.bigint();
      draw();
    },
    done() {
      finish();
      clearInterval(timer);
    },
  };
}
