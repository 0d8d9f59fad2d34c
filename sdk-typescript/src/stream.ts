/**
 * `ctx.stream(callback)`: the window in, the model's answer out, the answer
 * kept.
 *
 * ```
 * ctx.stream(fn) ── returns at once ─▶ ContextStream ── toResponse() ─▶ Response (SSE, UI message stream)
 *        │                                                                  ▲
 *        └─ background: GET …/context ─▶ toUIMessages ─▶ convertToModelMessages
 *                         ─▶ fn(messages, { uiMessages, window }) ─▶ streamText result
 *                         ─▶ result.toUIMessageStream() ─┬─ tee ─▶ client branch ──────┘
 *                                                       └─ tee ─▶ our branch, read to the end
 *                                                                  ─▶ POST …/messages (once)
 * ```
 *
 * Our branch is always read to the end, so the answer is appended even when
 * nobody reads the Response or the client goes away. The client branch
 * closes only after the append has settled, so once a reader has seen the end
 * of the body the answer is in the log; if the append failed, an `error`
 * chunk precedes the end. On a model error nothing is appended.
 *
 * This module imports ai-sdk for types only; its runtime (`convertToModelMessages`)
 * is loaded on the first `ctx.stream` call, so the rest of the client works
 * without `ai` installed.
 */

import type {
  LanguageModelUsage,
  ModelMessage,
  ToolSet,
  UIMessage,
  UIMessageChunk,
  UIMessageStreamOptions,
} from 'ai';

import { FastpacaError, StreamError } from './errors.js';
import { newMessageId } from './_ids.js';
import { serverSentEventsEncoder, UI_MESSAGE_STREAM_HEADERS } from './_ui_message_stream.js';
import type { AppendOptions, AppendResult, ContextWindow, FastpacaMessage, MessagePart, WindowOptions } from './types.js';
import { toUIMessages } from './ui-messages.js';

/** What the callback returns: a `streamText` result (anything with these two members). */
export interface StreamTextResultLike {
  toUIMessageStream(options?: UIMessageStreamOptions<UIMessage>): ReadableStream<UIMessageChunk>;
  readonly totalUsage: PromiseLike<LanguageModelUsage>;
}

/** The second argument of the callback. */
export interface StreamCallbackDetails {
  /** The window's messages as ai-sdk `UIMessage`s (see `toUIMessages`). */
  uiMessages: UIMessage[];
  /** The window as read (`version`, `used_tokens`, `messages`, …). */
  window: ContextWindow;
}

/**
 * Calls the model: receives the window as ai-sdk model messages (ready for
 * `streamText({ messages })`) and returns the `streamText` result.
 */
export type StreamCallback = (
  messages: ModelMessage[],
  details: StreamCallbackDetails,
) => StreamTextResultLike | PromiseLike<StreamTextResultLike>;

export interface ContextStreamOptions {
  /** Read the window trimmed to this many tokens (a model with a smaller context). */
  budgetTokens?: number | undefined;
  /** The id of the assistant message, in the stream's `start` chunk and in the log. Default `msg_<32 hex>`. */
  messageId?: string | undefined;
  /** Stored as the assistant message's `metadata` (not sent to the client). */
  metadata?: Record<string, unknown> | undefined;
  /** Passed to `convertToModelMessages` (tools' `toModelOutput`). */
  tools?: ToolSet | undefined;
  /** Stream reasoning parts to the client (default true; they are stored either way). */
  sendReasoning?: boolean | undefined;
  /** Stream source parts to the client (default false, as in ai-sdk). */
  sendSources?: boolean | undefined;
  /**
   * The text the client gets in an `error` chunk for an error (default
   * `'An error occurred.'`, as ai-sdk masks errors). Errors reach
   * `finalMessage()` unmasked.
   */
  onError?: ((error: unknown) => string) | undefined;
}

/** What `finalMessage()` resolves with once the answer is appended. */
export interface StreamedMessage {
  /** The assistant message as appended: `id`, `role: 'assistant'`, every part of the answer. */
  message: UIMessage & { role: 'assistant' };
  /** The append's answer: `seq`, `version`, `token_estimate`, … */
  appended: AppendResult;
  /** The model's total usage over all steps, when it reported one. */
  usage: LanguageModelUsage | undefined;
  /** The stream was aborted (its `abortSignal`); what had arrived was appended. */
  aborted: boolean;
}

/** What `ContextStream` needs from a context. */
export interface StreamTarget {
  context(options: WindowOptions): Promise<ContextWindow>;
  append(message: FastpacaMessage, options: AppendOptions): Promise<AppendResult>;
}

/**
 * A model answer on its way into a context. Returned by `ctx.stream`; use
 * one of `toResponse()` or `toUIMessageStream()` (once), and/or
 * `finalMessage()`.
 */
export class ContextStream {
  private readonly chunks: Promise<ReadableStream<UIMessageChunk>>;
  private readonly finished: Promise<StreamedMessage>;
  private used = false;
  private observed = false;

  /** @internal Use `ctx.stream(callback)`. */
  constructor(target: StreamTarget, callback: StreamCallback, options: ContextStreamOptions) {
    const run = startRun(target, callback, options, (error) => {
      // A route that only returns the Response never sees this failure: do not lose it silently.
      if (!this.observed) {
        console.error(`[fastpaca] ctx.stream: the answer could not be appended: ${describe(error)}`);
      }
    });
    this.chunks = run.chunks;
    this.finished = run.finished;
    // Nobody may ever ask for the outcome: no unhandled rejection for that.
    this.finished.catch(() => undefined);
  }

  /**
   * The answer as a streaming `Response` in ai-sdk's UI message stream
   * protocol (what `result.toUIMessageStreamResponse()` answers, for
   * `useChat`). Returned at once; its body starts once the window has been
   * read and ends after the answer has been appended.
   */
  toResponse(init: ResponseInit = {}): Response {
    const headers = new Headers(init.headers);
    for (const [name, value] of Object.entries(UI_MESSAGE_STREAM_HEADERS)) {
      if (!headers.has(name)) {
        headers.set(name, value);
      }
    }
    const body = this.toUIMessageStream().pipeThrough(serverSentEventsEncoder());
    const responseInit: ResponseInit = { status: init.status ?? 200, headers };
    if (init.statusText !== undefined) {
      responseInit.statusText = init.statusText;
    }
    return new Response(body, responseInit);
  }

  /** The answer as ai-sdk UI message chunks (e.g. to merge into `createUIMessageStream`). */
  toUIMessageStream(): ReadableStream<UIMessageChunk> {
    if (this.used) {
      throw new FastpacaError('This stream was already turned into a Response or a UI message stream.');
    }
    this.used = true;
    let reader: ReadableStreamDefaultReader<UIMessageChunk> | undefined;
    return new ReadableStream<UIMessageChunk>({
      pull: async (controller) => {
        reader ??= (await this.chunks).getReader();
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
        } else {
          controller.enqueue(value);
        }
      },
      cancel: async (reason) => {
        // Only the client's copy stops: the model runs on and the answer is still appended.
        await (reader ?? (await this.chunks).getReader()).cancel(reason);
      },
    });
  }

  /**
   * Resolves once the answer is appended, with the message and the append's
   * answer. Rejects, with nothing appended, when the window could not be read
   * (`APIError`), the callback or the model failed (`StreamError`, with the
   * cause), or the answer was empty; rejects with the `APIError` when the
   * append itself failed.
   */
  finalMessage(): Promise<StreamedMessage> {
    this.observed = true;
    return this.finished;
  }
}

interface Run {
  chunks: Promise<ReadableStream<UIMessageChunk>>;
  finished: Promise<StreamedMessage>;
}

function startRun(
  target: StreamTarget,
  callback: StreamCallback,
  options: ContextStreamOptions,
  onAppendFailure: (error: unknown) => void,
): Run {
  const errorText = (error: unknown): string => (options.onError ? options.onError(error) : 'An error occurred.');
  // Resolved once: by streamAndAppend with the client's copy, or here with an error chunk.
  let provideChunks!: (stream: ReadableStream<UIMessageChunk>) => void;
  const chunks = new Promise<ReadableStream<UIMessageChunk>>((resolve) => {
    provideChunks = resolve;
  });
  const finished = (async (): Promise<StreamedMessage> => {
    try {
      const window = await target.context({ budgetTokens: options.budgetTokens });
      const uiMessages = toUIMessages(window.messages) as UIMessage[];
      const { toModelMessages } = await loadAiBridge();
      const messages = await toModelMessages(uiMessages, options.tools);
      let result: StreamTextResultLike;
      try {
        result = await callback(messages, { uiMessages, window });
      } catch (error) {
        throw new StreamError(`ctx.stream: the callback failed: ${describe(error)}`, { cause: error });
      }
      return await streamAndAppend(target, result, options, errorText, provideChunks, onAppendFailure);
    } catch (error) {
      provideChunks(errorOnlyStream(errorText(error))); // no effect once the client's copy was provided
      throw error;
    }
  })();
  return { chunks, finished };
}

async function streamAndAppend(
  target: StreamTarget,
  result: StreamTextResultLike,
  options: ContextStreamOptions,
  errorText: (error: unknown) => string,
  provideChunks: (stream: ReadableStream<UIMessageChunk>) => void,
  onAppendFailure: (error: unknown) => void,
): Promise<StreamedMessage> {
  const messageId = options.messageId ?? newMessageId();
  const reportedErrors: unknown[] = [];
  let finish: Parameters<NonNullable<UIMessageStreamOptions<UIMessage>['onFinish']>>[0] | undefined;
  // Resolves when the append is over: with its error, or undefined (appended, or nothing to append).
  let settleAppend!: (error: unknown) => void;
  const appendSettled = new Promise<unknown>((resolve) => {
    settleAppend = resolve;
  });

  const uiStream = result.toUIMessageStream({
    generateMessageId: () => messageId,
    sendReasoning: options.sendReasoning ?? true,
    sendSources: options.sendSources ?? false,
    onError: (error) => {
      reportedErrors.push(error);
      return errorText(error);
    },
    onFinish: (event) => {
      finish = event;
    },
  });
  const [forClient, forAppend] = uiStream.tee();
  provideChunks(clientStream(forClient, appendSettled, errorText));

  try {
    // Read our copy to the end: this drives the model even when nobody reads the Response.
    let errorChunk: string | undefined;
    let streamFailure: unknown;
    const reader = forAppend.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        if (value.type === 'error' && errorChunk === undefined) {
          errorChunk = value.errorText;
        }
      }
    } catch (error) {
      streamFailure = error;
    }

    const outcome = finish?.outcome;
    const failed =
      streamFailure !== undefined || errorChunk !== undefined || finish === undefined || outcome?.status === 'failed';
    if (failed) {
      settleAppend(undefined); // the client already got the error chunk (or the broken stream)
      const cause =
        streamFailure ?? (outcome?.status === 'failed' ? outcome.error : undefined) ?? reportedErrors[0];
      throw new StreamError(
        `ctx.stream: the model stream failed${cause === undefined ? '' : `: ${describe(cause)}`}; nothing was appended.`,
        { cause },
      );
    }
    const responseMessage = finish!.responseMessage;
    const aborted = finish!.isAborted;
    const parts = responseMessage.parts as MessagePart[];
    if (!parts.some((part) => part.type !== 'step-start')) {
      settleAppend(undefined);
      const what = aborted ? 'was aborted before it produced any content' : 'produced no content';
      throw new StreamError(`ctx.stream: the model ${what}; nothing was appended.`);
    }

    const usage = await Promise.resolve(result.totalUsage).then(
      (value) => value,
      () => undefined,
    );
    const metadata = options.metadata ?? responseMessage.metadata;
    const message = {
      id: messageId,
      role: 'assistant' as const,
      parts: responseMessage.parts,
      ...(metadata === undefined || metadata === null ? {} : { metadata }),
    } satisfies UIMessage;
    let appended: AppendResult;
    try {
      appended = await target.append(message, {
        tokenCount: tokenCountFromUsage(usage, parts),
        // One key per answer: retries of this append can never store it twice.
        idempotencyKey: `stream_${messageId}`,
      });
    } catch (error) {
      settleAppend(error);
      onAppendFailure(error);
      throw error;
    }
    settleAppend(undefined);
    return { message, appended, usage, aborted };
  } catch (error) {
    settleAppend(error); // no effect when already settled; never leaves the client's copy hanging
    throw error;
  }
}

/**
 * The assistant message's token count from the model's usage: its output
 * tokens, less hidden reasoning tokens when the message holds no reasoning
 * text. `undefined` (the server counts) when the usage has no output count
 * or the message holds tool outputs, which tools produced, not the model.
 */
export function tokenCountFromUsage(
  usage: LanguageModelUsage | undefined,
  parts: readonly MessagePart[],
): number | undefined {
  const outputTokens = usage?.outputTokens;
  if (typeof outputTokens !== 'number' || !Number.isInteger(outputTokens) || outputTokens < 0) {
    return undefined;
  }
  const holdsToolOutput = parts.some(
    (part) =>
      (part.type.startsWith('tool-') || part.type === 'dynamic-tool') &&
      (part['state'] === 'output-available' || part['state'] === 'output-error'),
  );
  if (holdsToolOutput) {
    return undefined;
  }
  const reasoningTokens = usage?.outputTokenDetails?.reasoningTokens ?? usage?.reasoningTokens;
  const holdsReasoning = parts.some((part) => part.type === 'reasoning' && part['text'] !== '');
  if (!holdsReasoning && typeof reasoningTokens === 'number' && reasoningTokens > 0) {
    return Math.max(0, outputTokens - reasoningTokens);
  }
  return outputTokens;
}

/** The client's copy: errors become an `error` chunk; the end waits until the append has settled. */
function clientStream(
  source: ReadableStream<UIMessageChunk>,
  appendSettled: Promise<unknown>,
  errorText: (error: unknown) => string,
): ReadableStream<UIMessageChunk> {
  const reader = source.getReader();
  return new ReadableStream<UIMessageChunk>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (!done) {
          controller.enqueue(value);
          return;
        }
      } catch (error) {
        controller.enqueue({ type: 'error', errorText: errorText(error) });
        controller.close();
        return;
      }
      const appendError = await appendSettled;
      if (appendError !== undefined) {
        controller.enqueue({ type: 'error', errorText: errorText(appendError) });
      }
      controller.close();
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

function errorOnlyStream(errorText: string): ReadableStream<UIMessageChunk> {
  return new ReadableStream<UIMessageChunk>({
    start(controller) {
      controller.enqueue({ type: 'error', errorText });
      controller.close();
    },
  });
}

type AiBridge = typeof import('./_ai.js');

let aiBridge: Promise<AiBridge> | undefined;

function loadAiBridge(): Promise<AiBridge> {
  aiBridge ??= import('./_ai.js').catch((error: unknown) => {
    aiBridge = undefined;
    throw new FastpacaError('ctx.stream needs the `ai` package (ai-sdk 6): npm install ai@6', { cause: error });
  });
  return aiBridge;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
