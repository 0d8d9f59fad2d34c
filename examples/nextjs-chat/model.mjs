/**
 * lib/model.ts in a Next.js app: OpenAI when OPENAI_API_KEY is set and
 * `@ai-sdk/openai` is installed, otherwise ai-sdk's MockLanguageModelV3
 * streaming a canned answer (no network, no key).
 */

import { ai, loadAiTest, loadOpenAI } from './deps.mjs';

/** The mock's answer starts with this; the rest shows what the model was sent. */
export const CANNED_ANSWER = 'This is a canned answer from the mock model.';

let chosen;

/** `{ model, name }`, decided once per process. */
export function chatModel() {
  chosen ??= pickModel();
  return chosen;
}

async function pickModel() {
  if (process.env.OPENAI_API_KEY) {
    const provider = await loadOpenAI();
    if (provider !== undefined) {
      const modelId = process.env.OPENAI_MODEL ?? 'gpt-4o-mini';
      return { model: provider.openai(modelId), name: `openai:${modelId}` };
    }
    console.warn('[nextjs-chat] OPENAI_API_KEY is set but @ai-sdk/openai is not installed: using the mock model');
  }
  return { model: await mockModel(), name: 'mock' };
}

/** The text of a model prompt message (LanguageModelV3 prompt: content is a string or parts). */
function promptText(message) {
  if (typeof message.content === 'string') {
    return message.content;
  }
  return message.content
    .filter((part) => part.type === 'text')
    .map((part) => part.text)
    .join('');
}

async function mockModel() {
  const { MockLanguageModelV3 } = await loadAiTest();
  return new MockLanguageModelV3({
    provider: 'mock',
    modelId: 'canned',
    doStream: async ({ prompt }) => {
      // The window as the model got it (the system prompt aside).
      const history = prompt.filter((message) => message.role !== 'system');
      const lastUser = history.filter((message) => message.role === 'user').at(-1);
      const said = lastUser === undefined ? '' : promptText(lastUser);
      const answer =
        `${CANNED_ANSWER} It saw ${history.length} message${history.length === 1 ? '' : 's'} ` +
        `of this conversation; the last one said: "${said}".`;
      // Word by word, 15 ms apart, so the answer visibly streams.
      const deltas = answer.match(/\S+\s*/g) ?? [answer];
      const chunks = [
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id: 'text-1' },
        ...deltas.map((delta) => ({ type: 'text-delta', id: 'text-1', delta })),
        { type: 'text-end', id: 'text-1' },
        {
          type: 'finish',
          finishReason: { unified: 'stop', raw: 'stop' },
          // No token counts: Fastpaca counts the stored answer itself.
          usage: {
            inputTokens: { total: undefined, noCache: undefined, cacheRead: undefined, cacheWrite: undefined },
            outputTokens: { total: undefined, text: undefined, reasoning: undefined },
          },
        },
      ];
      return { stream: ai.simulateReadableStream({ chunks, initialDelayInMs: null, chunkDelayInMs: 15 }) };
    },
  });
}
