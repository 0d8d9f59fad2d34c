/**
 * The spec drives the types: the build generates `_generated/openapi.ts`
 * from `spec/openapi.yaml`, and the client does not compile when the two
 * disagree. This test generates the types from the real spec into a scratch
 * copy of the sources, changes them as four spec edits would, and checks
 * that `tsc` fails at each of the four places that must notice.
 */

import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { expect, it } from 'vitest';

const run = promisify(execFile);
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Replace `from` (which must be there) with `to`. */
function edit(source: string, from: string, to: string): string {
  expect(source, `the generated types no longer contain ${JSON.stringify(from)}`).toContain(from);
  return source.replace(from, to);
}

it('the build fails where the client and a changed spec disagree', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'fastpaca-spec-drift-'));
  try {
    cpSync(join(PACKAGE_ROOT, 'src'), join(scratch, 'src'), {
      recursive: true,
      filter: (path) => !path.endsWith('.test.ts') && !path.includes('_testing') && !path.includes('_generated'),
    });
    symlinkSync(join(PACKAGE_ROOT, 'node_modules'), join(scratch, 'node_modules'));
    writeFileSync(join(scratch, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(
      join(scratch, 'tsconfig.json'),
      JSON.stringify({ extends: join(PACKAGE_ROOT, 'tsconfig.build.json'), compilerOptions: { noEmit: true, rootDir: 'src' }, include: ['src'] }),
    );
    const generated = join(scratch, 'src', '_generated', 'openapi.ts');
    await run(process.execPath, [
      join(PACKAGE_ROOT, 'node_modules', 'openapi-typescript', 'bin', 'cli.js'),
      join(PACKAGE_ROOT, '..', 'spec', 'openapi.yaml'),
      '--default-non-nullable',
      'false',
      '--output',
      generated,
    ]);

    const typecheck = () =>
      run(process.execPath, [join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--project', join(scratch, 'tsconfig.json')], {
        cwd: scratch,
      }).then(
        () => undefined,
        (error: { stdout: string }) => error.stdout,
      );
    // The scratch copy compiles against the spec as it is.
    expect(await typecheck()).toBeUndefined();

    let types = readFileSync(generated, 'utf8');
    // 1. PUT gains a field the SDK does not send.
    types = edit(types, '        ContextPut: {\n', '        ContextPut: {\n            ttl_seconds?: number;\n');
    // 2. The append request renames `if_version`.
    const appendRequest = /        AppendRequest: \{[^]*?\n        \}/.exec(types)?.[0];
    expect(appendRequest, 'the generated types have no AppendRequest').toBeDefined();
    types = edit(types, appendRequest!, edit(appendRequest!, 'if_version?:', 'expected_version?:'));
    // 3. A message gains a field the SDK's message type lacks.
    types = edit(types, '        Message: {\n', '        Message: {\n            name?: string | null;\n');
    // 4. A new route the SDK has no method for.
    types = edit(
      types,
      'export interface operations {\n',
      'export interface operations {\n    listEverything: { parameters: { query?: never; header?: never; path?: never; cookie?: never }; requestBody?: never; responses: { 200: { headers: { [name: string]: unknown }; content: { "application/json": string[] } } } };\n',
    );
    writeFileSync(generated, types);

    const failure = await typecheck();
    expect(failure, 'tsc passed although the spec changed').toBeDefined();
    const errors = failure!.split('\n').filter((line) => line.includes('error TS'));
    const places = (file: string) => errors.filter((line) => line.startsWith(`src/${file}(`));
    expect(places('client.ts').join('\n')).toContain('ttl_seconds');
    expect(places('context.ts').join('\n')).toMatch(/if_version/);
    expect(places('_spec_checks.ts').length).toBeGreaterThan(0);
    expect(places('_wire.ts').join('\n')).toContain('listEverything');
    expect(errors.length).toBe(
      ['client.ts', 'context.ts', '_spec_checks.ts', '_wire.ts'].map((file) => places(file).length).reduce((a, b) => a + b),
    );
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}, 60_000);
