import { parseArgs as parseUtilArgs } from 'node:util';
import { fail } from '../errors.js';

/** A flag a command accepts: its short and long names and whether it takes a value. */
export interface FlagSpec {
  short?: string;
  long: string;
  value: boolean;
  help: string;
}

/**
 * Parses `argv` against `specs` with node:util's parseArgs, so the usual forms work: `-n2`,
 * `-n 2`, `--vectors=2`, grouped short flags (`-vF`), and `--` ending the options (what follows
 * is positional, flags included). Values by long name, booleans as true; a wrong flag is an
 * `ERR_IVSHMEM_INVALID_ARGUMENT` naming the command.
 */
export function parseArgs(argv: string[], specs: FlagSpec[], command: string): { flags: Record<string, string | true>; rest: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const s of specs) options[s.long] = s.short ? { type: s.value ? 'string' : 'boolean', short: s.short } : { type: s.value ? 'string' : 'boolean' };
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseUtilArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    // node:util's messages are for programmers: keep the option they name, say it plainly.
    const { code, message } = error as { code?: string; message: string };
    const option = /'([^']+)'/.exec(message)?.[1]?.split(' ')[0]?.replace(/,$/, '') ?? '';
    const what =
      code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
        ? `unknown option ${option}`
        : code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE'
          ? message.includes('does not take an argument')
            ? `${option} takes no value`
            : message.includes('ambiguous') && option.startsWith('--')
              ? `${option} needs a value (one starting with '-' is written ${option}=VALUE)`
              : `${option} needs a value`
          : message.split('\n')[0];
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem ${command}: ${what} (see ivshmem ${command} --help)`);
  }
  const flags: Record<string, string | true> = {};
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === true || typeof value === 'string') flags[name] = value;
  }
  return { flags, rest: parsed.positionals };
}

/**
 * An integer flag within `min..max`, or `fallback` when the flag is absent; anything else is an
 * `ERR_IVSHMEM_INVALID_ARGUMENT` that quotes what was given.
 */
export function intFlag(flags: Record<string, string | true>, name: string, command: string, range: { min: number; max?: number; fallback?: number }): number | undefined {
  const text = flags[name];
  if (text === undefined) return range.fallback;
  const value = typeof text === 'string' && /^-?\d+$/.test(text.trim()) ? Number(text) : NaN;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(value) || value < range.min || value > max) {
    const bounds = range.max === undefined ? `${range.min} or more` : `${range.min}..${range.max}`;
    fail('ERR_IVSHMEM_INVALID_ARGUMENT', `ivshmem ${command}: --${name} must be an integer ${bounds}, got '${String(text)}'`);
  }
  return value;
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
