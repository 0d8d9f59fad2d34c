import { validateUIMessages } from 'ai';
import { describe, expect, it } from 'vitest';

import { toModelMessages } from './_ai.js';
import { toUIMessages, type WindowMessageLike } from './ui-messages.js';

const system: WindowMessageLike = { id: 's', role: 'system', parts: [{ type: 'text', text: 'Be brief.' }] };
const question: WindowMessageLike = { id: 'q', role: 'user', parts: [{ type: 'text', text: 'Weather in Oslo?' }], metadata: null };

describe('toUIMessages', () => {
  it('folds a server-style tool_call and its tool_result into one dynamic-tool part', () => {
    const window: WindowMessageLike[] = [
      system,
      question,
      {
        id: 'a1',
        role: 'assistant',
        parts: [
          { type: 'text', text: 'Checking.' },
          { type: 'tool_call', id: 'call_1', name: 'get_weather', payload: { city: 'Oslo' } },
        ],
      },
      { id: 't1', role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'call_1', payload: { temperature_c: 3 } }] },
      { id: 'a2', role: 'assistant', parts: [{ type: 'text', text: '3 °C.' }], metadata: { model: 'x' } },
    ];
    expect(toUIMessages(window)).toEqual([
      { id: 's', role: 'system', parts: [{ type: 'text', text: 'Be brief.' }] },
      { id: 'q', role: 'user', parts: [{ type: 'text', text: 'Weather in Oslo?' }] },
      {
        id: 'a1',
        role: 'assistant',
        parts: [
          { type: 'text', text: 'Checking.' },
          {
            type: 'dynamic-tool',
            toolName: 'get_weather',
            toolCallId: 'call_1',
            input: { city: 'Oslo' },
            state: 'output-available',
            output: { temperature_c: 3 },
          },
        ],
      },
      { id: 'a2', role: 'assistant', parts: [{ type: 'text', text: '3 °C.' }], metadata: { model: 'x' } },
    ]);
  });

  it('gives UI messages that ai-sdk validates', async () => {
    const window: WindowMessageLike[] = [
      question,
      { id: 'a1', role: 'assistant', parts: [{ type: 'tool_call', id: 'call_1', name: 'get_weather', payload: { city: 'Oslo' } }] },
      { id: 't1', role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'call_1', payload: 'cloudy' }] },
    ];
    await expect(validateUIMessages({ messages: toUIMessages(window) })).resolves.toHaveLength(2);
  });

  it('leaves an unanswered call input-available, drops orphan results and non-UI roles', () => {
    const window: WindowMessageLike[] = [
      { id: 'orphan', role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'gone', payload: 1 }] },
      { id: 'u', role: 'user', parts: [{ type: 'text', text: 'hi' }, { type: 'tool_result', tool_call_id: 'gone' }] },
      { id: 'dev', role: 'developer', parts: [{ type: 'text', text: 'ignored' }] },
      { id: 'a', role: 'assistant', parts: [{ type: 'tool_call', id: 'call_2', name: 'lookup', query: 'x' }] },
    ];
    expect(toUIMessages(window)).toEqual([
      { id: 'u', role: 'user', parts: [{ type: 'text', text: 'hi' }] },
      {
        id: 'a',
        role: 'assistant',
        parts: [{ type: 'dynamic-tool', toolName: 'lookup', toolCallId: 'call_2', input: { query: 'x' }, state: 'input-available' }],
      },
    ]);
  });

  it('keeps ai-sdk parts verbatim', () => {
    const parts = [
      { type: 'step-start' },
      { type: 'reasoning', text: 'hmm', state: 'done' },
      { type: 'tool-weather', toolCallId: 'c', state: 'output-available', input: { city: 'Oslo' }, output: { c: 3 } },
      { type: 'text', text: 'Cold.', state: 'done' },
    ];
    const [message] = toUIMessages([{ id: 'a', role: 'assistant', parts }]);
    expect(message?.parts).toEqual(parts);
    expect(message?.parts[2]).toBe(parts[2]);
  });
});

describe('toModelMessages (the window as streamText receives it)', () => {
  it('turns both tool-call styles into an assistant tool-call and a tool result', async () => {
    const window: WindowMessageLike[] = [
      system,
      question,
      { id: 'a1', role: 'assistant', parts: [{ type: 'tool_call', id: 'call_1', name: 'get_weather', payload: { city: 'Oslo' } }] },
      { id: 't1', role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'call_1', payload: { temperature_c: 3 } }] },
      {
        id: 'a2',
        role: 'assistant',
        parts: [
          { type: 'step-start' },
          { type: 'tool-get_time', toolCallId: 'call_2', state: 'output-available', input: { zone: 'CET' }, output: '12:00' },
          { type: 'step-start' },
          { type: 'text', text: 'Noon and 3 °C.', state: 'done' },
        ],
      },
      { id: 'a3', role: 'assistant', parts: [{ type: 'tool_call', id: 'call_3', name: 'pending', payload: {} }] },
    ];
    const messages = await toModelMessages(toUIMessages(window) as never, undefined);
    expect(messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: [{ type: 'text', text: 'Weather in Oslo?' }] },
      {
        role: 'assistant',
        content: [{ type: 'tool-call', toolCallId: 'call_1', toolName: 'get_weather', input: { city: 'Oslo' }, providerExecuted: undefined }],
      },
      {
        role: 'tool',
        content: [{ type: 'tool-result', toolCallId: 'call_1', toolName: 'get_weather', output: { type: 'json', value: { temperature_c: 3 } } }],
      },
      {
        role: 'assistant',
        content: [{ type: 'tool-call', toolCallId: 'call_2', toolName: 'get_time', input: { zone: 'CET' }, providerExecuted: undefined }],
      },
      { role: 'tool', content: [{ type: 'tool-result', toolCallId: 'call_2', toolName: 'get_time', output: { type: 'text', value: '12:00' } }] },
      { role: 'assistant', content: [{ type: 'text', text: 'Noon and 3 °C.' }] },
    ]);
  });
});
