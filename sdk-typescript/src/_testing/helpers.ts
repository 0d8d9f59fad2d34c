/** Helpers for tests that talk to the server started by the global setup. */

import { randomBytes } from 'node:crypto';

import { inject } from 'vitest';

import { createClient, type FastpacaClient } from '../client.js';
import type { ClientOptions } from '../types.js';

/** The server's `/v1` base URL and API key. */
export function serverUrl(): string {
  return `${inject('fastpacaUrl')}/v1`;
}

export function serverApiKey(): string {
  return inject('fastpacaApiKey');
}

/** A client for the test server. */
export function testClient(options: ClientOptions = {}): FastpacaClient {
  return createClient({ baseUrl: serverUrl(), apiKey: serverApiKey(), ...options });
}

/** A context id no other test uses. */
export function uniqueId(prefix = 'test'): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** Read a Response body to the end as text. */
export async function readBody(response: Response): Promise<string> {
  return response.text();
}

/** The JSON chunks of a UI message stream body (`data: …` lines, without `[DONE]`). */
export function parseUIMessageStream(body: string): Array<Record<string, unknown>> {
  return body
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: ') && frame !== 'data: [DONE]')
    .map((frame) => JSON.parse(frame.slice('data: '.length)) as Record<string, unknown>);
}
