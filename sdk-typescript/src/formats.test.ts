/**
 * `ctx.context({ format })`: the window as OpenAI Chat Completions or Anthropic
 * Messages API messages, converted by the server, typed by the format asked for.
 */

import { describe, expect, expectTypeOf, it } from 'vitest';

import type { FastpacaContext } from './context.js';
import { BadRequestError, ConflictError } from './errors.js';
import { testClient, uniqueId } from './_testing/helpers.js';
import type {
  AnthropicContextWindow,
  AnyContextWindow,
  ContextWindow,
  FastpacaMessage,
  OpenAIContextWindow,
  WindowFormat,
} from './types.js';

const CONVERSATION: FastpacaMessage[] = [
  { role: 'system', parts: [{ type: 'text', text: 'Be terse.' }] },
  { role: 'user', parts: [{ type: 'text', text: 'Weather in Paris?' }] },
  {
    role: 'assistant',
    parts: [
      { type: 'step-start' },
      { type: 'reasoning', text: 'look it up' },
      { type: 'tool_call', id: 'c1', name: 'weather', payload: { city: 'Paris' } },
    ],
  },
  { role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'c1', payload: '21°C' }] },
  {
    role: 'assistant',
    parts: [
      {
        type: 'tool-forecast',
        toolCallId: 't1',
        state: 'output-available',
        input: { city: 'Paris' },
        output: { tomorrow: 'rain' },
      },
      { type: 'text', text: '21°C, rain tomorrow.' },
    ],
  },
  { role: 'user', parts: [{ type: 'text', text: 'Thanks!' }] },
];

/** A fetch that records the query string of every request it passes on. */
function recordingFetch(): { fetch: typeof fetch; queries: Array<Record<string, string>> } {
  const queries: Array<Record<string, string>> = [];
  return {
    queries,
    fetch: async (input, init) => {
      queries.push(Object.fromEntries(new URL(String(input)).searchParams));
      return fetch(input, init);
    },
  };
}

async function filled(messages: FastpacaMessage[] = CONVERSATION, fetchFunction?: typeof fetch): Promise<FastpacaContext> {
  const ctx = await testClient(fetchFunction ? { fetch: fetchFunction } : {}).context(uniqueId('formats'), { budget: 100_000 });
  if (messages.length > 0) {
    await ctx.appendMany(messages);
  }
  return ctx;
}

describe('ctx.context({ format })', () => {
  it('types the answer by the format asked for', () => {
    const calls = (ctx: FastpacaContext, format: WindowFormat) => ({
      plain: ctx.context(),
      ui: ctx.context({ format: 'ui', budgetTokens: 10 }),
      openai: ctx.context({ format: 'openai' }),
      anthropic: ctx.context({ format: 'anthropic', ifVersion: 3 }),
      dynamic: ctx.context({ format }),
    });
    type Calls = ReturnType<typeof calls>;
    expectTypeOf<Calls['plain']>().toEqualTypeOf<Promise<ContextWindow>>();
    expectTypeOf<Calls['ui']>().toEqualTypeOf<Promise<ContextWindow>>();
    expectTypeOf<Calls['openai']>().toEqualTypeOf<Promise<OpenAIContextWindow>>();
    expectTypeOf<Calls['anthropic']>().toEqualTypeOf<Promise<AnthropicContextWindow>>();
    expectTypeOf<Calls['dynamic']>().toEqualTypeOf<Promise<AnyContextWindow>>();
    expectTypeOf<WindowFormat>().toEqualTypeOf<'ui' | 'openai' | 'anthropic'>();
  });

  it('answers the stored messages by default', async () => {
    const ctx = await filled();
    const window = await ctx.context();
    expect(window).not.toHaveProperty('format');
    expect(window.messages.map((message) => message.role)).toEqual(['system', 'user', 'assistant', 'tool', 'assistant', 'user']);
    expect(await ctx.context({ format: 'ui' })).toEqual(window);
  });

  it('answers OpenAI Chat Completions messages with the same envelope', async () => {
    const ctx = await filled();
    const ui = await ctx.context();
    const window = await ctx.context({ format: 'openai' });
    expect(window.format).toBe('openai');
    expect(window.messages).toEqual([
      { role: 'system', content: 'Be terse.' },
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'weather', arguments: '{"city": "Paris"}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: '21°C' },
      {
        role: 'assistant',
        content: '21°C, rain tomorrow.',
        tool_calls: [{ id: 't1', type: 'function', function: { name: 'forecast', arguments: '{"city": "Paris"}' } }],
      },
      { role: 'tool', tool_call_id: 't1', content: '{"tomorrow": "rain"}' },
      { role: 'user', content: 'Thanks!' },
    ]);
    const { format: _format, messages: _messages, ...envelope } = window;
    const { messages: _uiMessages, ...uiEnvelope } = ui;
    expect(envelope).toEqual(uiEnvelope);
  });

  it('answers Anthropic system and messages, results opening the next user turn', async () => {
    const ctx = await filled();
    const window = await ctx.context({ format: 'anthropic' });
    expect(window.format).toBe('anthropic');
    expect(window.system).toBe('Be terse.');
    expect(window.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Weather in Paris?' }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'c1', name: 'weather', input: { city: 'Paris' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'c1', content: '21°C' }] },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 't1', name: 'forecast', input: { city: 'Paris' } },
          { type: 'text', text: '21°C, rain tomorrow.' },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 't1', content: '{"tomorrow": "rain"}' },
          { type: 'text', text: 'Thanks!' },
        ],
      },
    ]);
    const withoutSystem = await (await filled(CONVERSATION.slice(1, 2))).context({ format: 'anthropic' });
    expect(withoutSystem).not.toHaveProperty('system');
  });

  it('trims to budgetTokens before converting, and checks ifVersion', async () => {
    const ctx = await filled([]);
    await ctx.append({ role: 'system', parts: [{ type: 'text', text: 'rules' }] }, { tokenCount: 5 });
    const turns = Array.from({ length: 6 }, (_, i): FastpacaMessage => ({ role: 'user', parts: [{ type: 'text', text: `m${i}` }], token_count: 10 }));
    const { version } = await ctx.appendMany(turns);
    const trimmed = await ctx.context({ budgetTokens: 30 });
    const window = await ctx.context({ format: 'openai', budgetTokens: 30, ifVersion: version });
    expect(window.budget_tokens).toBe(30);
    expect(window.used_tokens).toBe(trimmed.used_tokens);
    expect(trimmed.messages.length).toBeLessThan(7);
    expect(window.messages).toEqual(trimmed.messages.map((message) => ({ role: message.role, content: message.parts[0]?.['text'] })));
    expect(window.messages[0]).toEqual({ role: 'system', content: 'rules' });
    await expect(ctx.context({ format: 'anthropic', ifVersion: version + 1 })).rejects.toBeInstanceOf(ConflictError);
  });

  it('sends format only when it is not the default', async () => {
    const recorder = recordingFetch();
    const ctx = await filled(CONVERSATION.slice(0, 2), recorder.fetch);
    recorder.queries.length = 0;
    await ctx.context();
    await ctx.context({ format: 'ui', budgetTokens: 100 });
    await ctx.context({ format: 'openai' });
    await ctx.context({ format: 'anthropic', ifVersion: 2 });
    expect(recorder.queries).toEqual([{}, { budget_tokens: '100' }, { format: 'openai' }, { if_version: '2', format: 'anthropic' }]);
  });

  it('an unknown format is the server’s 400', async () => {
    const ctx = await filled(CONVERSATION.slice(0, 1));
    const error = await ctx.context({ format: 'gemini' as WindowFormat }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BadRequestError);
    expect(error).toMatchObject({ status: 400, code: 'invalid_request' });
    expect((error as Error).message).toContain("'format' must be one of ui, openai, anthropic.");
  });
});
