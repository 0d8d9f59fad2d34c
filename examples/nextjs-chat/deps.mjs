/**
 * Stand-in for `node_modules`. In a Next.js app you would write
 * `import { streamText } from 'ai'` and `import { createClient } from
 * '@fastpaca/fastpaca'`. This example installs nothing: it loads the SDK from
 * `sdk-typescript/dist` and its packages from `sdk-typescript/node_modules`,
 * using each package's ESM entry as its package.json `exports` names it.
 *
 * `ai` is loaded from the same file the SDK itself imports, so there is one
 * copy of ai-sdk in the process.
 */

import { existsSync, readFileSync } from 'node:fs';

const SDK_DIR = new URL('../../sdk-typescript/', import.meta.url);
const NODE_MODULES = new URL('node_modules/', SDK_DIR);

/** The `import` target of a package.json `exports` entry (conditions may nest). */
function importTarget(entry) {
  if (typeof entry === 'string') {
    return entry;
  }
  if (entry === null || typeof entry !== 'object') {
    return undefined;
  }
  for (const condition of ['import', 'module', 'node', 'default']) {
    const target = importTarget(entry[condition]);
    if (target !== undefined) {
      return target;
    }
  }
  return undefined;
}

/** The file URL of `name`'s ESM entry for `subpath` ('.' or './test'), from sdk-typescript/node_modules. */
export function resolvePackage(name, subpath = '.') {
  const dir = new URL(`${name}/`, NODE_MODULES);
  const manifest = new URL('package.json', dir);
  if (!existsSync(manifest)) {
    throw new Error(`${name} is not installed in sdk-typescript/node_modules (run \`make install\`)`);
  }
  const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
  const { exports } = pkg;
  let entry;
  if (typeof exports === 'string' || (exports && Object.keys(exports).every((key) => !key.startsWith('.')))) {
    entry = subpath === '.' ? exports : undefined; // `exports` is the root entry itself
  } else if (exports) {
    entry = exports[subpath];
  } else if (subpath === '.') {
    entry = pkg.module ?? pkg.main ?? 'index.js';
  }
  const target = importTarget(entry);
  if (target === undefined) {
    throw new Error(`${name} has no ESM entry for ${subpath}`);
  }
  return new URL(target, dir).href;
}

const sdkEntry = new URL('dist/index.js', SDK_DIR);
if (!existsSync(sdkEntry)) {
  throw new Error('sdk-typescript/dist is missing: build the SDK first (`make install`, or `npm run build` in sdk-typescript)');
}

/** `@fastpaca/fastpaca` */
export const fastpacaSdk = await import(sdkEntry.href);
/** `ai` */
export const ai = await import(resolvePackage('ai'));

/** `ai/test` (MockLanguageModelV3), loaded only when the mock model is used. */
export function loadAiTest() {
  return import(resolvePackage('ai', './test'));
}

/**
 * `@ai-sdk/openai`, or `undefined` when it is not installed: first as your app
 * would import it, then from sdk-typescript/node_modules.
 */
export async function loadOpenAI() {
  try {
    return await import('@ai-sdk/openai');
  } catch {
    // not resolvable from this folder
  }
  try {
    return await import(resolvePackage('@ai-sdk/openai'));
  } catch {
    return undefined;
  }
}
