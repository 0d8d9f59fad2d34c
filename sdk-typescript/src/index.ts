/**
 * `@fastpaca/fastpaca`: the TypeScript client for Fastpaca, with `ctx.stream`
 * over ai-sdk.
 *
 * ```ts
 * import { createClient } from '@fastpaca/fastpaca';
 *
 * const fastpaca = createClient({ baseUrl: 'http://localhost:4000/v1' });
 * const ctx = await fastpaca.context('chat_42', { budget: 1_000_000 });
 * await ctx.append({ role: 'user', parts: [{ type: 'text', text: 'What changed?' }] });
 * const stream = ctx.stream((messages) => streamText({ model, messages }));
 * return stream.toResponse();
 * ```
 */

export { createClient, FastpacaClient } from './client.js';
export { FastpacaContext } from './context.js';
export {
  ContextStream,
  type ContextStreamOptions,
  type StreamCallback,
  type StreamCallbackDetails,
  type StreamedMessage,
  type StreamTextResultLike,
} from './stream.js';
export { toUIMessages, type WindowMessageLike } from './ui-messages.js';
export {
  APIConnectionError,
  APIError,
  APITimeoutError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  FastpacaError,
  InternalServerError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  ServiceUnavailableError,
  StreamError,
  type ErrorBody,
} from './errors.js';
export type { FetchFunction } from './_transport.js';
export type * from './types.js';
