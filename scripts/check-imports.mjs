#!/usr/bin/env node
// The import rule of src/, run by `npm test` (pretest) and by its own test:
//
// 1. Each folder of src/ has one door, its index.ts. A file may import anything in its own
//    folder, but from another folder only that folder's index.ts. The files at the top of
//    src/ (errors.ts, native.ts) are the base every folder stands on and may be imported by
//    any; src/index.ts is the package's door and is imported by nobody inside src/.
// 2. The layers stack: a folder imports only the folders below it (LAYERS), so no arrow points
//    up and there is no cycle between folders.
//
// Tests (test/) are not checked: unit tests may reach a folder's internals on purpose.
//
// Usage: node scripts/check-imports.mjs [SRC_DIR]  (default: src next to this script's folder)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

/** What each folder may import besides itself and the base files. */
export const LAYERS = {
  protocol: [],
  device: ['protocol'],
  server: ['protocol'],
  channel: ['device'],
  bus: ['channel', 'device'],
  testing: ['server', 'device'],
  cli: ['bus', 'channel', 'device', 'server', 'protocol', 'testing'],
  spec: ['bus', 'channel', 'device', 'protocol'],
};

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) yield path;
  }
}

// Specifiers of static imports, re-exports and dynamic imports; comments are dropped first.
function specifiers(source) {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const found = [];
  for (const re of [/\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g]) {
    for (const m of code.matchAll(re)) found.push(m[1]);
  }
  return found;
}

/** The folder of src/ a path is in ('' for the top), and the rest of its path. */
function place(src, path) {
  const parts = relative(src, path).split(sep);
  return parts.length === 1 ? { folder: '', rest: parts[0] } : { folder: parts[0], rest: parts.slice(1).join('/') };
}

/** Every violation in the tree at `src`, as 'file: import: why' lines. */
export function checkImports(src) {
  const problems = [];
  for (const file of files(src)) {
    const from = place(src, file);
    for (const spec of specifiers(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
      const to = place(src, target);
      const where = `${relative(src, file)}: '${spec}'`;
      if (target.startsWith('..') || relative(src, target).startsWith('..')) {
        problems.push(`${where}: reaches outside src/`);
      } else if (to.folder === '') {
        if (to.rest === 'index.ts') problems.push(`${where}: src/index.ts is the package's door, not for use inside src/`);
      } else if (to.folder !== from.folder) {
        if (to.rest !== 'index.ts') problems.push(`${where}: reaches past ${to.folder}/index.ts (import what ${to.folder}/ offers from its index.ts, or add it there)`);
        const allowed = from.folder === '' ? (from.rest === 'index.ts' ? null : []) : LAYERS[from.folder];
        if (allowed === undefined) problems.push(`${where}: the folder ${from.folder}/ has no place in LAYERS (scripts/check-imports.mjs)`);
        else if (allowed !== null && !allowed.includes(to.folder)) problems.push(`${where}: ${from.folder || 'a base file'} may import only ${allowed.join(', ') || 'the base files'}: ${to.folder}/ is not below it`);
      }
    }
  }
  return problems;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const src = resolve(process.argv[2] ?? join(dirname(new URL(import.meta.url).pathname), '..', 'src'));
  const problems = checkImports(src);
  if (problems.length > 0) {
    console.error(`Import rule broken (see scripts/check-imports.mjs):\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log('imports: every folder is entered through its index.ts, and no layer imports one above it');
}
