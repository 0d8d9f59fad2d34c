/**
 * app/api/chat/route.ts in a Next.js app.
 *
 * POST { conversationId, message } → the answer as a UI message stream
 * (Server-Sent Events, what `useChat` reads). `message` is the user's text
 * or a UIMessage (`{ id?, role: 'user', parts }`). The body `useChat` sends
 * by default (`{ id, messages }`) works too: the chat id is the conversation
 * id and the last message is the new one (Fastpaca has the earlier ones).
 *
 * The user message is appended to the conversation's Fastpaca context;
 * `ctx.stream` reads the window, runs `streamText` over it and appends the
 * finished answer to the context once, even if the browser goes away.
 */

import { ai } from './deps.mjs';
import { CONTEXT_OPTIONS, fastpaca, fastpacaErrorResponse, jsonError } from './fastpaca.mjs';
import { chatModel } from './model.mjs';

const { streamText } = ai;

const SYSTEM_PROMPT = 'You are a helpful assistant. Answer briefly.';

/** The new user message from the body, as a UIMessage, or a string saying what is wrong. */
function userMessage(message) {
  if (typeof message === 'string') {
    return message.trim() === '' ? '`message` is empty' : { role: 'user', parts: [{ type: 'text', text: message }] };
  }
  if (message === null || typeof message !== 'object' || !Array.isArray(message.parts) || message.parts.length === 0) {
    return '`message` must be a string or a UIMessage with parts';
  }
  if (message.role !== undefined && message.role !== 'user') {
    return '`message.role` must be "user"';
  }
  return { ...message, role: 'user' };
}

export async function POST(request) {
  let body;
  try {
    body = await request.json();
  } catch {
    return jsonError(400, 'invalid_json', 'the body must be JSON');
  }
  const conversationId = body?.conversationId ?? body?.id;
  if (typeof conversationId !== 'string' || conversationId === '') {
    return jsonError(400, 'invalid_request', '`conversationId` (a string) is required');
  }
  const message = userMessage(body.message ?? (Array.isArray(body.messages) ? body.messages.at(-1) : undefined));
  if (typeof message === 'string') {
    return jsonError(400, 'invalid_request', message);
  }

  const { model } = await chatModel();
  let ctx;
  try {
    ctx = await fastpaca.context(conversationId, CONTEXT_OPTIONS); // PUT: creates it, or changes nothing
    await ctx.append(message);
  } catch (error) {
    return fastpacaErrorResponse(error);
  }

  const stream = ctx.stream((messages) => streamText({ model, system: SYSTEM_PROMPT, messages }));
  // Logs where the answer went; in a serverless deployment: waitUntil(stream.finalMessage()).
  stream.finalMessage().then(
    ({ message: answer }) => console.log(`[nextjs-chat] ${conversationId}: answer ${answer.id} appended`),
    (error) => console.error(`[nextjs-chat] ${conversationId}: no answer appended:`, error),
  );
  return stream.toResponse({ headers: { 'x-conversation-id': conversationId } });
}
