/**
 * app/api/history/route.ts in a Next.js app.
 *
 * GET ?conversationId=…&offset=0&limit=50 → a page of the conversation's log
 * (every message ever appended, not just the LLM window), newest page first:
 * offset 0 is the newest `limit` messages, each page oldest first. Use it to
 * show a conversation after a reload (`useChat({ messages })`), and
 * `next_offset` to load older pages.
 */

import { fastpaca, fastpacaErrorResponse, jsonError } from './fastpaca.mjs';

function intParam(params, name, fallback, max) {
  const raw = params.get(name);
  if (raw === null || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  return Number.isInteger(value) && value >= 0 && value <= max ? value : undefined;
}

export async function GET(request) {
  const params = new URL(request.url).searchParams;
  const conversationId = params.get('conversationId');
  if (!conversationId) {
    return jsonError(400, 'invalid_request', '`conversationId` is required');
  }
  const offset = intParam(params, 'offset', 0, Number.MAX_SAFE_INTEGER);
  const limit = intParam(params, 'limit', 50, 1000);
  if (offset === undefined || limit === undefined || limit === 0) {
    return jsonError(400, 'invalid_request', '`offset` must be an integer ≥ 0 and `limit` one in 1..1000');
  }

  try {
    const ctx = await fastpaca.context(conversationId); // no options: no request
    const page = await ctx.getTail({ offset, limit });
    return Response.json({
      conversationId,
      messages: page.messages,
      last_seq: page.last_seq,
      has_more: page.has_more,
      next_offset: page.has_more ? offset + page.messages.length : null,
    });
  } catch (error) {
    return fastpacaErrorResponse(error);
  }
}
