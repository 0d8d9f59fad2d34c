/** ai-sdk's own mock language model (`MockLanguageModelV3` from `ai/test`), scripted per test. */

import { simulateReadableStream } from 'ai';
import { MockLanguageModelV3 } from 'ai/test';

type StreamResult = Awaited<ReturnType<MockLanguageModelV3['doStream']>>;
export type StreamPart = StreamResult['stream'] extends ReadableStream<infer Part> ? Part : never;
type FinishPart = Extract<StreamPart, { type: 'finish' }>;

/** A step's stream parts, or an error that `doStream` throws (the provider call fails). */
export type ScriptedStep = StreamPart[] | Error;

export interface Usage {
  input?: number;
  output?: number;
  reasoning?: number;
}

export function usage({ input = 10, output = 20, reasoning = 0 }: Usage = {}): FinishPart['usage'] {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: output, text: output - reasoning, reasoning },
  };
}

export function finish(reason: 'stop' | 'tool-calls' = 'stop', tokens: Usage = {}): FinishPart {
  return { type: 'finish', finishReason: { unified: reason, raw: reason }, usage: usage(tokens) };
}

export function text(id: string, ...deltas: string[]): StreamPart[] {
  return [
    { type: 'text-start', id },
    ...deltas.map((delta): StreamPart => ({ type: 'text-delta', id, delta })),
    { type: 'text-end', id },
  ];
}

export function reasoning(id: string, ...deltas: string[]): StreamPart[] {
  return [
    { type: 'reasoning-start', id },
    ...deltas.map((delta): StreamPart => ({ type: 'reasoning-delta', id, delta })),
    { type: 'reasoning-end', id },
  ];
}

export function toolCall(toolCallId: string, toolName: string, input: unknown): StreamPart {
  return { type: 'tool-call', toolCallId, toolName, input: JSON.stringify(input) };
}

/**
 * A mock model that plays `steps` in order, one per `doStream` call (a
 * multi-step tool loop calls it once per step). `chunkDelayInMs` spaces the
 * parts out.
 */
export function scriptedModel(steps: ScriptedStep[], chunkDelayInMs: number | null = null): MockLanguageModelV3 {
  let call = 0;
  return new MockLanguageModelV3({
    doStream: async () => {
      const step = steps[call];
      call += 1;
      if (step === undefined) {
        throw new Error(`the mock model has no step ${call}`);
      }
      if (step instanceof Error) {
        throw step;
      }
      return { stream: simulateReadableStream({ chunks: step, chunkDelayInMs, initialDelayInMs: null }) };
    },
  });
}

/** A model that answers `answer` in two text deltas and reports `tokens` usage. */
export function textModel(answer: string, tokens: Usage = {}): MockLanguageModelV3 {
  const middle = Math.ceil(answer.length / 2);
  return scriptedModel([[...text('text-1', answer.slice(0, middle), answer.slice(middle)), finish('stop', tokens)]]);
}
