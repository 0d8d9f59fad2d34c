/**
 * lib/fastpaca.ts in a Next.js app: one client for every route, and how a
 * route answers a Fastpaca error.
 */

import { fastpacaSdk } from './deps.mjs';

const { APIError, createClient } = fastpacaSdk;

/** FASTPACA_URL (default http://localhost:4000/v1) and FASTPACA_API_KEY come from the environment. */
export const fastpaca = createClient();

/** How each conversation's context is created: 8k-token window, the newest 200 messages. */
export const CONTEXT_OPTIONS = { budget: 8000, policy: { strategy: 'last_n', config: { limit: 200 } } };

export function jsonError(status, code, message) {
  return Response.json({ error: { code, message } }, { status });
}

/** A Fastpaca error as the route's answer: its 4xx passed on, anything else a 502. */
export function fastpacaErrorResponse(error) {
  if (error instanceof APIError && error.status >= 400 && error.status < 500) {
    return jsonError(error.status, error.code ?? 'fastpaca_error', error.message);
  }
  console.error('[nextjs-chat] Fastpaca request failed:', error);
  const message = error instanceof Error ? error.message : String(error);
  return jsonError(502, 'fastpaca_unavailable', `Fastpaca request failed: ${message}`);
}
