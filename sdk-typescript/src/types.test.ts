/**
 * The message types fit ai-sdk's `UIMessage` without the core importing
 * ai-sdk. The type-level checks here run in `npm run build` (tsc over the
 * tests too); the runtime ones keep the module graph honest.
 */

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { streamText, UIMessage } from 'ai';
import { describe, expect, expectTypeOf, it } from 'vitest';

import type { FastpacaContext } from './context.js';
import type { StreamTextResultLike } from './stream.js';
import type { FastpacaMessage, FastpacaUIMessage, MessagePart, ReplacementMessage, StoredMessage } from './types.js';

type AppendParameter = Parameters<FastpacaContext['append']>[0];

describe('message types', () => {
  it('take an ai-sdk UIMessage as it is, whatever its metadata, data and tool types', () => {
    expectTypeOf<UIMessage>().toExtend<AppendParameter>();
    expectTypeOf<UIMessage<{ createdAt: number }, { weather: { city: string } }, { search: { input: { q: string }; output: string[] } }>>().toExtend<FastpacaMessage>();
    expectTypeOf<UIMessage['parts'][number]>().toExtend<MessagePart>();
  });

  it('take stored messages back (compact keeps them; append copies them)', () => {
    expectTypeOf<StoredMessage>().toExtend<ReplacementMessage>();
    expectTypeOf<StoredMessage>().toExtend<FastpacaMessage>();
  });

  it('give UI messages with the UIMessage fields', () => {
    expectTypeOf<FastpacaUIMessage['role']>().toEqualTypeOf<UIMessage['role']>();
    expectTypeOf<keyof FastpacaUIMessage>().toEqualTypeOf<keyof UIMessage>();
  });

  it('accept a streamText result from the stream callback', () => {
    expectTypeOf<ReturnType<typeof streamText>>().toExtend<StreamTextResultLike>();
  });
});

describe('the core does not load ai-sdk', () => {
  it('only _ai.ts imports ai at run time; every other module imports its types only', () => {
    const sourceDirectory = dirname(fileURLToPath(import.meta.url));
    const sources = readdirSync(sourceDirectory).filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'));
    const runtimeImporters = sources.filter((file) => {
      const source = readFileSync(join(sourceDirectory, file), 'utf8');
      return /^import\s+(?!type\b)[^;]*from\s+'ai(\/[^']*)?';/m.test(source);
    });
    expect(runtimeImporters).toEqual(['_ai.ts']);
    const stream = readFileSync(join(sourceDirectory, 'stream.ts'), 'utf8');
    expect(stream).toContain("import('./_ai.js')");
  });
});
