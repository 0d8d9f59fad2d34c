import { createUIMessageStreamResponse, stepCountIs, streamText, tool, UI_MESSAGE_STREAM_HEADERS, type UIMessageChunk } from 'ai';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';

import { ConflictError, FastpacaError, NotFoundError, StreamError } from './errors.js';
import { tokenCountFromUsage } from './stream.js';
import { serverUrl, parseUIMessageStream, testClient, uniqueId } from './_testing/helpers.js';
import { finish, reasoning, scriptedModel, text, textModel, toolCall } from './_testing/models.js';
import { serverSentEventsEncoder, UI_MESSAGE_STREAM_HEADERS as OUR_HEADERS } from './_ui_message_stream.js';
import type { FastpacaMessage } from './types.js';

const question: FastpacaMessage = { role: 'user', parts: [{ type: 'text', text: 'What changed?' }] };

async function newContext(prefix: string, options: Parameters<ReturnType<typeof testClient>['context']>[1] = { budget: 100_000 }) {
  const fastpaca = testClient();
  const ctx = await fastpaca.context(uniqueId(prefix), options);
  return { fastpaca, ctx };
}

/** A fetch that counts the appends it passes on. */
function countingFetch() {
  const counter = { appends: 0 };
  const counting: typeof fetch = (input, init) => {
    if (init?.method === 'POST' && String(input).endsWith('/messages')) {
      counter.appends += 1;
    }
    return fetch(input, init);
  };
  return { fetch: counting, counter };
}

describe('ctx.stream', () => {
  it('returns at once; the Response streams the answer and the answer is appended once', async () => {
    const { ctx } = await newContext('text');
    await ctx.append({ role: 'system', parts: [{ type: 'text', text: 'You are terse.' }] });
    await ctx.append(question);
    const model = textModel('Nothing much.', { output: 5 });
    const seen: { messages?: unknown; uiMessages?: unknown; version?: number } = {};

    const stream = ctx.stream((messages, { uiMessages, window }) => {
      Object.assign(seen, { messages, uiMessages, version: window.version });
      // The window's system prompt comes as a system message: say that is intended.
      return streamText({ model, messages, allowSystemInMessages: true });
    });
    const response = stream.toResponse();
    expect(response).toBeInstanceOf(Response);
    expect(model.doStreamCalls).toHaveLength(0); // nothing has run yet: the window is still being read
    expect(response.status).toBe(200);
    expect(Object.fromEntries(response.headers)).toMatchObject(UI_MESSAGE_STREAM_HEADERS);

    const body = await response.text();
    expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
    const chunks = parseUIMessageStream(body);
    const start = chunks.find((chunk) => chunk['type'] === 'start');
    expect(start?.['messageId']).toMatch(/^msg_[0-9a-f]{32}$/);
    const deltas = chunks.filter((chunk) => chunk['type'] === 'text-delta').map((chunk) => chunk['delta']);
    expect(deltas.join('')).toBe('Nothing much.');
    expect(chunks.at(-1)?.['type']).toBe('finish');

    // The callback got ai-sdk model messages, converted from the window, and the UI messages.
    expect(seen.messages).toEqual([
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: [{ type: 'text', text: 'What changed?' }] },
    ]);
    expect(seen.uiMessages).toMatchObject([{ role: 'system' }, { role: 'user', parts: [{ type: 'text', text: 'What changed?' }] }]);
    expect(seen.version).toBe(3);
    expect(model.doStreamCalls[0]?.prompt).toHaveLength(2);

    // Once the body has ended, the answer is in the log.
    const { messages } = await ctx.getTail();
    expect(messages).toHaveLength(3);
    expect(messages[2]).toMatchObject({
      seq: 3,
      id: start?.['messageId'],
      role: 'assistant',
      token_count: 5, // the model's output tokens
      parts: [{ type: 'step-start' }, { type: 'text', text: 'Nothing much.', state: 'done' }],
    });
    const final = await stream.finalMessage();
    expect(final.appended).toMatchObject({ seq: 3, token_estimate: 5 });
    expect(final.message.id).toBe(start?.['messageId']);
    expect(final.usage?.outputTokens).toBe(5);
    expect(final.aborted).toBe(false);
  });

  it('works without a Response: await finalMessage()', async () => {
    const { fetch: counting, counter } = countingFetch();
    const fastpaca = testClient({ fetch: counting });
    const ctx = await fastpaca.context(uniqueId('no-response'), { budget: 100_000 });
    await ctx.append(question);
    const { message, appended } = await ctx
      .stream((messages) => streamText({ model: textModel('Done.'), messages }), { metadata: { source: 'test' } })
      .finalMessage();
    expect(appended.seq).toBe(2);
    expect(message.parts.at(-1)).toMatchObject({ type: 'text', text: 'Done.' });
    const stored = (await ctx.getTail()).messages[1];
    expect(stored).toMatchObject({ id: message.id, metadata: { source: 'test' } });
    expect(counter.appends).toBe(2); // the question, and the answer once
  });

  it('stores reasoning, text and a usage-based token count', async () => {
    const { ctx } = await newContext('reasoning');
    await ctx.append(question);
    const model = scriptedModel([
      [...reasoning('r1', 'Let me ', 'think.'), ...text('t1', 'Forty-two.'), finish('stop', { output: 30, reasoning: 12 })],
    ]);
    const { message, appended } = await ctx.stream((messages) => streamText({ model, messages })).finalMessage();
    expect(message.parts).toEqual([
      { type: 'step-start' },
      { type: 'reasoning', id: 'r1', text: 'Let me think.', state: 'done' },
      { type: 'text', text: 'Forty-two.', state: 'done' },
    ]);
    expect(appended.token_estimate).toBe(30); // reasoning text is stored, so its tokens count
  });

  it('leaves hidden reasoning tokens out of the count when no reasoning text is stored', async () => {
    const { ctx } = await newContext('hidden-reasoning');
    await ctx.append(question);
    const model = scriptedModel([[...text('t1', 'Short.'), finish('stop', { output: 50, reasoning: 40 })]]);
    const { appended } = await ctx.stream((messages) => streamText({ model, messages })).finalMessage();
    expect(appended.token_estimate).toBe(10);
  });

  it('stores a multi-step tool answer (tool part with input and output), counted by the server', async () => {
    const { ctx } = await newContext('tools');
    await ctx.append({ role: 'user', parts: [{ type: 'text', text: 'Weather in Oslo?' }] });
    const model = scriptedModel([
      [toolCall('call_1', 'weather', { city: 'Oslo' }), finish('tool-calls', { output: 15 })],
      [...text('t1', 'It is 3 °C.'), finish('stop', { output: 8 })],
    ]);
    const tools = {
      weather: tool({
        description: 'Weather for a city',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => ({ city, temperature_c: 3 }),
      }),
    };
    const stream = ctx.stream((messages) => streamText({ model, messages, tools, stopWhen: stepCountIs(3) }));
    const chunks = parseUIMessageStream(await stream.toResponse().text());
    expect(chunks.map((chunk) => chunk['type'])).toContain('tool-output-available');

    const { message, appended, usage } = await stream.finalMessage();
    expect(message.parts).toEqual([
      { type: 'step-start' },
      { type: 'tool-weather', toolCallId: 'call_1', state: 'output-available', input: { city: 'Oslo' }, output: { city: 'Oslo', temperature_c: 3 } },
      { type: 'step-start' },
      { type: 'text', text: 'It is 3 °C.', state: 'done' },
    ]);
    expect(usage?.outputTokens).toBe(23);
    expect(appended.token_estimate).not.toBe(23); // tool output came from code: the server counted the message

    // The next turn sends the stored tool call and its result back to the model.
    await ctx.append({ role: 'user', parts: [{ type: 'text', text: 'And tomorrow?' }] });
    const next = textModel('Same.');
    await ctx.stream((messages) => streamText({ model: next, messages, tools })).finalMessage();
    expect(next.doStreamCalls[0]?.prompt.map((message) => message.role)).toEqual(['user', 'assistant', 'tool', 'assistant', 'user']);
    expect(next.doStreamCalls[0]?.prompt[2]).toMatchObject({
      role: 'tool',
      content: [{ type: 'tool-result', toolCallId: 'call_1', output: { type: 'json', value: { city: 'Oslo', temperature_c: 3 } } }],
    });
  });

  it('feeds server-style tool_call/tool_result messages (other SDKs) to the model as tool messages', async () => {
    const { ctx } = await newContext('server-tools');
    await ctx.appendMany([
      { role: 'user', parts: [{ type: 'text', text: 'Weather in Oslo?' }] },
      { role: 'assistant', parts: [{ type: 'tool_call', id: 'call_9', name: 'get_weather', payload: { city: 'Oslo' } }] },
      { role: 'tool', parts: [{ type: 'tool_result', tool_call_id: 'call_9', payload: { temperature_c: 3 } }] },
    ]);
    const model = textModel('3 °C.');
    const { uiMessages } = await new Promise<{ uiMessages: unknown }>((resolve, reject) => {
      ctx
        .stream((messages, details) => {
          resolve(details);
          return streamText({ model, messages });
        })
        .finalMessage()
        .catch(reject);
    });
    expect(uiMessages).toMatchObject([
      { role: 'user' },
      { role: 'assistant', parts: [{ type: 'dynamic-tool', toolName: 'get_weather', toolCallId: 'call_9', state: 'output-available' }] },
    ]);
    await expect.poll(() => model.doStreamCalls.length).toBe(1);
    expect(model.doStreamCalls[0]?.prompt).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Weather in Oslo?' }], providerOptions: undefined },
      {
        role: 'assistant',
        content: [{ type: 'tool-call', toolCallId: 'call_9', toolName: 'get_weather', input: { city: 'Oslo' }, providerExecuted: undefined, providerOptions: undefined }],
        providerOptions: undefined,
      },
      {
        role: 'tool',
        content: [{ type: 'tool-result', toolCallId: 'call_9', toolName: 'get_weather', output: { type: 'json', value: { temperature_c: 3 } }, providerOptions: undefined }],
        providerOptions: undefined,
      },
    ]);
  });

  it('appends nothing when the model call fails; the client gets an error chunk', async () => {
    const { ctx } = await newContext('failing');
    await ctx.append(question);
    const failure = new Error('rate limited');
    const stream = ctx.stream((messages) =>
      streamText({ model: scriptedModel([failure]), messages, maxRetries: 0, onError: () => undefined }),
    );
    const chunks = parseUIMessageStream(await stream.toResponse().text());
    expect(chunks.at(-1)).toEqual({ type: 'error', errorText: 'An error occurred.' });
    const error = await stream.finalMessage().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).cause).toBe(failure);
    expect((error as StreamError).message).toContain('rate limited');
    expect((await ctx.get()).last_seq).toBe(1);
  });

  it('appends nothing when the model stream errors midway, even after some text', async () => {
    const { ctx } = await newContext('error-midway');
    await ctx.append(question);
    const model = scriptedModel([[...text('t1', 'Half an ans').slice(0, 2), { type: 'error', error: new Error('overloaded') }]]);
    const stream = ctx.stream((messages) => streamText({ model, messages, onError: () => undefined }), {
      onError: (error) => `failed: ${(error as Error).message}`,
    });
    const chunks = parseUIMessageStream(await stream.toResponse().text());
    expect(chunks).toContainEqual({ type: 'error', errorText: 'failed: overloaded' });
    await expect(stream.finalMessage()).rejects.toBeInstanceOf(StreamError);
    expect((await ctx.get()).last_seq).toBe(1);
  });

  it('a callback that throws: error chunk, nothing appended', async () => {
    const { ctx } = await newContext('callback-throws');
    await ctx.append(question);
    const stream = ctx.stream(() => {
      throw new Error('no model configured');
    });
    expect(parseUIMessageStream(await stream.toResponse().text())).toEqual([{ type: 'error', errorText: 'An error occurred.' }]);
    await expect(stream.finalMessage()).rejects.toThrow(/callback failed: no model configured/);
    expect((await ctx.get()).last_seq).toBe(1);
  });

  it('a result that cannot be streamed: error chunk, the body does not hang', async () => {
    const { ctx } = await newContext('broken-result');
    await ctx.append(question);
    const stream = ctx.stream(() => ({
      toUIMessageStream: () => {
        throw new Error('not a streamText result');
      },
      totalUsage: Promise.resolve({} as never),
    }));
    expect(parseUIMessageStream(await stream.toResponse().text())).toEqual([{ type: 'error', errorText: 'An error occurred.' }]);
    await expect(stream.finalMessage()).rejects.toThrow('not a streamText result');
    expect((await ctx.get()).last_seq).toBe(1);
  });

  it('a window that cannot be read: error chunk, the APIError from finalMessage, no model call', async () => {
    const ctx = await testClient().context(uniqueId('no-such-context'));
    const model = textModel('unused');
    const stream = ctx.stream((messages) => streamText({ model, messages }));
    expect(parseUIMessageStream(await stream.toResponse().text())).toEqual([{ type: 'error', errorText: 'An error occurred.' }]);
    await expect(stream.finalMessage()).rejects.toBeInstanceOf(NotFoundError);
    expect(model.doStreamCalls).toHaveLength(0);
  });

  it('a failed append ends the body with an error chunk, rejects finalMessage and is logged', async () => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const { fastpaca, ctx } = await newContext('append-fails');
    await ctx.append(question);
    const stream = ctx.stream(async (messages) => {
      await fastpaca.deleteContext(ctx.id); // the context goes away while the model answers
      return streamText({ model: textModel('Too late.'), messages });
    });
    const chunks = parseUIMessageStream(await stream.toResponse().text());
    expect(chunks.slice(-2).map((chunk) => chunk['type'])).toEqual(['finish', 'error']);
    const error = await stream.finalMessage().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error).toMatchObject({ code: 'context_tombstoned' });
    // Nobody was waiting on finalMessage() when it failed (a route that only returns the Response).
    expect(logged).toHaveBeenCalledWith(expect.stringContaining('[fastpaca] ctx.stream: the answer could not be appended'));
    logged.mockRestore();
  });

  it('appends once even when the append’s answer is lost and retried', async () => {
    let appends = 0;
    const lossy: typeof fetch = async (input, init) => {
      const isAppend = init?.method === 'POST' && String(input).endsWith('/messages');
      const response = await fetch(input, init);
      if (isAppend && ++appends === 2) {
        await response.text();
        throw new TypeError('fetch failed: socket hang up');
      }
      return response;
    };
    const ctx = await testClient({ fetch: lossy }).context(uniqueId('lossy'), { budget: 100_000 });
    await ctx.append(question);
    const { appended } = await ctx.stream((messages) => streamText({ model: textModel('Once.'), messages })).finalMessage();
    expect(appends).toBe(3); // the lost try and its retry, under one idempotency key
    expect(appended.seq).toBe(2);
    expect((await ctx.getTail()).messages).toHaveLength(2);
  });

  it('keeps the answer when the client goes away mid-stream', async () => {
    const { ctx } = await newContext('disconnect');
    await ctx.append(question);
    const model = scriptedModel([[...text('t1', 'one ', 'two ', 'three ', 'four'), finish()]], 20);
    const stream = ctx.stream((messages) => streamText({ model, messages }));
    const reader = stream.toResponse().body!.getReader();
    await reader.read();
    await reader.cancel();
    const { message } = await stream.finalMessage();
    expect(message.parts.at(-1)).toMatchObject({ type: 'text', text: 'one two three four' });
    expect((await ctx.getTail()).messages).toHaveLength(2);
  });

  it('appends what had arrived when the model call is aborted', async () => {
    const { ctx } = await newContext('abort');
    await ctx.append(question);
    const controller = new AbortController();
    const model = scriptedModel([[...text('t1', 'one ', 'two ', 'three ', 'four ', 'five'), finish()]], 40);
    const stream = ctx.stream((messages) => streamText({ model, messages, abortSignal: controller.signal }));
    const reader = stream.toUIMessageStream().getReader();
    for (;;) {
      const { value } = await reader.read();
      if (value?.type === 'text-delta') {
        controller.abort();
        break;
      }
    }
    const { message, aborted } = await stream.finalMessage();
    expect(aborted).toBe(true);
    const stored = (await ctx.getTail()).messages[1];
    expect(stored?.id).toBe(message.id);
    const storedText = stored?.parts.find((part) => part.type === 'text')?.['text'];
    expect(typeof storedText === 'string' && storedText.length > 0 && storedText.length < 'one two three four five'.length).toBe(true);
  });

  it('takes the message id and the window budget from its options', async () => {
    const { fastpaca, ctx } = await newContext('options');
    await ctx.append({ role: 'user', parts: [{ type: 'text', text: 'old '.repeat(50) }] });
    await ctx.append(question);
    let windowTokens = 0;
    const { message } = await ctx
      .stream(
        (messages, { window }) => {
          windowTokens = window.used_tokens;
          return streamText({ model: textModel('Ok.'), messages });
        },
        { messageId: 'answer-1', budgetTokens: 20 },
      )
      .finalMessage();
    expect(message.id).toBe('answer-1');
    expect(windowTokens).toBeLessThanOrEqual(20);
    expect((await (await fastpaca.context(ctx.id)).getTail()).messages.at(-1)?.id).toBe('answer-1');
  });

  it('can be turned into a Response or a UI message stream only once', async () => {
    const { ctx } = await newContext('once');
    await ctx.append(question);
    const stream = ctx.stream((messages) => streamText({ model: textModel('x'), messages }));
    const chunks: UIMessageChunk[] = [];
    for await (const chunk of stream.toUIMessageStream()) {
      chunks.push(chunk);
    }
    expect(chunks[0]?.type).toBe('start');
    expect(() => stream.toResponse()).toThrow(FastpacaError);
  });

  it('adds the caller’s status and headers to the Response', async () => {
    const { ctx } = await newContext('init');
    await ctx.append(question);
    const response = ctx
      .stream((messages) => streamText({ model: textModel('x'), messages }))
      .toResponse({ status: 201, headers: { 'x-context-id': ctx.id, 'cache-control': 'no-store' } });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-context-id')).toBe(ctx.id);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.headers.get('x-vercel-ai-ui-message-stream')).toBe('v1');
    await response.text();
  });
});

describe('the UI message stream wire format', () => {
  it('matches ai-sdk’s createUIMessageStreamResponse byte for byte', async () => {
    const chunks: UIMessageChunk[] = [
      { type: 'start', messageId: 'msg_1' },
      { type: 'text-start', id: 't' },
      { type: 'text-delta', id: 't', delta: 'Grüße "quoted"\n' },
      { type: 'text-end', id: 't' },
      { type: 'finish' },
    ];
    const stream = () =>
      new ReadableStream<UIMessageChunk>({
        start(controller) {
          chunks.forEach((chunk) => controller.enqueue(chunk));
          controller.close();
        },
      });
    const theirs = createUIMessageStreamResponse({ stream: stream() });
    const ours = new Response(stream().pipeThrough(serverSentEventsEncoder()));
    expect(await ours.text()).toBe(await theirs.text());
    expect(OUR_HEADERS).toEqual(UI_MESSAGE_STREAM_HEADERS);
  });
});

describe('tokenCountFromUsage', () => {
  const usage = (outputTokens: number | undefined, reasoningTokens?: number) =>
    ({ outputTokens, outputTokenDetails: { textTokens: undefined, reasoningTokens } }) as never;
  it('is the output tokens, less hidden reasoning; undefined with tool outputs or no usage', () => {
    expect(tokenCountFromUsage(usage(12), [{ type: 'text', text: 'x' }])).toBe(12);
    expect(tokenCountFromUsage(usage(12, 5), [{ type: 'text', text: 'x' }])).toBe(7);
    expect(tokenCountFromUsage(usage(12, 5), [{ type: 'reasoning', text: 'why' }, { type: 'text', text: 'x' }])).toBe(12);
    expect(tokenCountFromUsage(usage(undefined), [{ type: 'text', text: 'x' }])).toBeUndefined();
    expect(tokenCountFromUsage(undefined, [{ type: 'text', text: 'x' }])).toBeUndefined();
    expect(tokenCountFromUsage(usage(12), [{ type: 'tool-x', state: 'output-available' }])).toBeUndefined();
    expect(tokenCountFromUsage(usage(12), [{ type: 'dynamic-tool', state: 'output-error' }])).toBeUndefined();
    expect(tokenCountFromUsage(usage(12), [{ type: 'tool-x', state: 'input-available' }])).toBe(12);
  });
});

it('the stream tests talk to the real server', () => {
  expect(serverUrl()).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
});
