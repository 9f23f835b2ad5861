import { fail } from '../errors.js';

/** A flag a command accepts: its short and long names and whether it takes a value. */
export interface FlagSpec {
  short?: string;
  long: string;
  value: boolean;
  help: string;
}

/** Parses `argv` against `specs`; values by long name, booleans as true. */
export function parseArgs(argv: string[], specs: FlagSpec[], command: string): { flags: Record<string, string | true>; rest: string[] } {
  const flags: Record<string, string | true> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-') || arg === '-') {
      rest.push(arg);
      continue;
    }
    const [name, inline] = arg.startsWith('--') ? splitOnce(arg.slice(2)) : [arg.slice(1), undefined];
    const spec = specs.find((s) => (arg.startsWith('--') ? s.long === name : s.short === name));
    if (!spec) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem ${command}: unknown option ${arg} (see ivshmem ${command} --help)`);
    if (!spec.value) {
      flags[spec.long] = true;
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem ${command}: ${arg} needs a value`);
    flags[spec.long] = value;
  }
  return { flags, rest };
}

function splitOnce(s: string): [string, string | undefined] {
  const i = s.indexOf('=');
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

/** Help text for a command's flags. */
export function flagHelp(specs: FlagSpec[]): string {
  return specs
    .map((s) => `  ${s.short ? `-${s.short}, ` : '    '}--${s.long}${s.value ? ' VALUE' : ''}`.padEnd(28) + s.help)
    .join('\n');
}

/** Parses sizes as QEMU's server does: bytes, or with a K, M or G suffix (powers of 1024). */
export function parseSize(text: string): number {
  const m = /^(\d+)([kKmMgGtT]?)[bB]?$/.exec(text.trim());
  if (!m) fail('ERR_IVSHMEM_INVALID_ARGUMENT', `size '${text}' is not a number of bytes with an optional K, M or G suffix`);
  const scale = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * scale;
}
