/**
 * End to end: a Next.js-style `route.ts` handler (`POST(request) → Response`)
 * built on the SDK, called as the framework calls it, read as `useChat`
 * reads it, with the model mocked by ai-sdk's `MockLanguageModelV3` and the
 * Fastpaca server real.
 */

import { readUIMessageStream, streamText, type UIMessage, type UIMessageChunk } from 'ai';
import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import { parseUIMessageStream, serverApiKey, serverUrl, uniqueId } from './_testing/helpers.js';
import { serveRoute } from './_testing/http.js';
import { textModel } from './_testing/models.js';

// What `@ai-sdk/openai` would provide; here every model id answers from the mock.
let mockModel = textModel('Nothing yet.');
const openai = (modelId: string) => {
  expect(modelId).toBe('gpt-4o-mini');
  return mockModel;
};

const fastpaca = createClient({ baseUrl: serverUrl(), apiKey: serverApiKey() });

/** Fastpaca's landing-page snippet, verbatim, as the body of a route handler. */
async function headlineRoute(): Promise<Response> {
  const ctx = await fastpaca.context('chat_42', { budget: 1_000_000, trigger: 0.7,
    policy: { strategy: 'last_n', config: { limit: 400 } } });
  await ctx.append({ role: 'user', parts: [{ type: 'text', text: 'What changed?' }] });
  const stream = ctx.stream((messages) => streamText({ model: openai('gpt-4o-mini'), messages }));
  return stream.toResponse();
}

/** A chat route as `useChat` calls it: the client sends its chat id and the new user message. */
async function POST(request: Request): Promise<Response> {
  const { id, message } = (await request.json()) as { id: string; message: UIMessage };
  const ctx = await fastpaca.context(id, { budget: 8000, policy: { strategy: 'last_n', config: { limit: 200 } } });
  await ctx.append(message);
  return ctx
    .stream((messages) => streamText({ model: openai('gpt-4o-mini'), messages }))
    .toResponse({ headers: { 'x-chat-id': id } });
}

/** What `useChat` does with the body: parse the SSE frames and build the assistant message. */
async function readAsUseChat(response: Response): Promise<UIMessage> {
  const chunks = parseUIMessageStream(await response.text()) as unknown as UIMessageChunk[];
  const stream = new ReadableStream<UIMessageChunk>({
    start(controller) {
      chunks.forEach((chunk) => controller.enqueue(chunk));
      controller.close();
    },
  });
  let last: UIMessage | undefined;
  for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
    last = message;
  }
  if (last === undefined) {
    throw new Error('the stream built no message');
  }
  return last;
}

describe('a route.ts handler', () => {
  it('the headline snippet works verbatim and leaves the answer appended', async () => {
    mockModel = textModel('The budget moved to 1M tokens.', { output: 9 });
    const response = await headlineRoute();
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const shown = await readAsUseChat(response);
    expect(shown.parts.at(-1)).toMatchObject({ type: 'text', text: 'The budget moved to 1M tokens.' });

    const ctx = await fastpaca.context('chat_42');
    const { messages } = await ctx.getTail();
    expect(messages.map((message) => [message.role, message.parts.at(-1)?.['text']])).toEqual([
      ['user', 'What changed?'],
      ['assistant', 'The budget moved to 1M tokens.'],
    ]);
    expect(messages[1]?.id).toBe(shown.id);
    expect(messages[1]?.parts).toEqual(shown.parts);
    expect(messages[1]?.token_count).toBe(9);
  });

  it('served over HTTP, keeps every turn of a conversation, and the model sees the history', async () => {
    const app = await serveRoute(POST);
    const id = uniqueId('chat');
    const turns = ['Hi!', 'What did I just say?'];
    const answers = ['Hello.', 'You said hi.'];
    try {
      for (const [index, turn] of turns.entries()) {
        mockModel = textModel(answers[index]!);
        const response = await fetch(`${app.url}/api/chat`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ id, message: { id: `user-${index}`, role: 'user', parts: [{ type: 'text', text: turn }] } }),
        });
        expect(response.status).toBe(200);
        expect(response.headers.get('x-chat-id')).toBe(id);
        expect(response.headers.get('x-vercel-ai-ui-message-stream')).toBe('v1');
        const shown = await readAsUseChat(response);
        expect(shown.parts.at(-1)).toMatchObject({ text: answers[index] });
      }
    } finally {
      await app.close();
    }
    // The second call saw the whole first turn.
    expect(mockModel.doStreamCalls[0]?.prompt.map((message) => message.role)).toEqual(['user', 'assistant', 'user']);

    const { messages } = await (await fastpaca.context(id)).getTail();
    expect(messages.map((message) => `${message.role}: ${String(message.parts.at(-1)?.['text'])}`)).toEqual([
      'user: Hi!',
      'assistant: Hello.',
      'user: What did I just say?',
      'assistant: You said hi.',
    ]);
    expect(messages.map((message) => message.id).slice(0, 1)).toEqual(['user-0']);
  });
});
