import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import {
  APIConnectionError,
  APIError,
  APITimeoutError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  ServiceUnavailableError,
} from './errors.js';
import { backoffSeconds } from './_transport.js';
import { serverApiKey, serverUrl, testClient, uniqueId } from './_testing/helpers.js';
import { freePort, spawnServer, stopProcess } from './_testing/server.js';
import type { FastpacaMessage } from './types.js';

const hello: FastpacaMessage = { role: 'user', parts: [{ type: 'text', text: 'Hello' }] };

interface SeenRequest {
  method: string;
  url: string;
  body: string | undefined;
}

/**
 * A fetch that passes requests to the real server, except that `plan(attempt)`
 * may fail an attempt instead: `'network'` before the server sees it,
 * `'lost'` after the server answered (the answer never arrives), or a
 * synthetic response.
 */
function faultyFetch(plan: (attempt: number, request: SeenRequest) => 'pass' | 'network' | 'lost' | Response) {
  const seen: SeenRequest[] = [];
  const faulty: typeof fetch = async (input, init) => {
    const request = { method: init?.method ?? 'GET', url: String(input), body: init?.body as string | undefined };
    seen.push(request);
    const action = plan(seen.length, request);
    if (action === 'network') {
      throw new TypeError('fetch failed');
    }
    if (action === 'lost') {
      const answer = await fetch(input, init);
      await answer.text();
      throw new TypeError('fetch failed: other side closed');
    }
    if (action instanceof Response) {
      return action;
    }
    return fetch(input, init);
  };
  return { fetch: faulty, seen };
}

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

const unavailable = () => jsonResponse(503, { error: 'unavailable', message: 'Not committed.' }, { 'retry-after': '0' });

describe('retries', () => {
  it('retries a network failure and succeeds', async () => {
    const faulty = faultyFetch((attempt) => (attempt === 1 ? 'network' : 'pass'));
    const fastpaca = testClient({ fetch: faulty.fetch });
    const ctx = await fastpaca.context(uniqueId('network'), { budget: 100 });
    expect(faulty.seen).toHaveLength(2);
    expect((await ctx.get()).version).toBe(1);
  });

  it('an append whose answer was lost is retried with the same key and stored once', async () => {
    const id = uniqueId('lost');
    await testClient().context(id, { budget: 100 });
    let appends = 0;
    const faulty = faultyFetch((_, request) => {
      if (request.method === 'POST') {
        appends += 1;
        return appends === 1 ? 'lost' : 'pass';
      }
      return 'pass';
    });
    const ctx = await testClient({ fetch: faulty.fetch }).context(id);
    const result = await ctx.append(hello);
    expect(result).toMatchObject({ seq: 1, version: 2 });

    const posts = faulty.seen.filter((request) => request.method === 'POST');
    expect(posts).toHaveLength(2);
    expect(posts[0]?.body).toBe(posts[1]?.body);
    expect(JSON.parse(posts[0]!.body!).idempotency_key).toMatch(/^fastpaca_[0-9a-f]{32}$/);
    expect((await ctx.getTail()).messages).toHaveLength(1);
  });

  it('each call gets its own idempotency key (two appends of the same message store two)', async () => {
    const recorder = faultyFetch(() => 'pass');
    const ctx = await testClient({ fetch: recorder.fetch }).context(uniqueId('keys'), { budget: 100 });
    await ctx.append(hello);
    await ctx.append(hello);
    const keys = recorder.seen
      .filter((request) => request.method === 'POST')
      .map((request) => JSON.parse(request.body!).idempotency_key as string);
    expect(new Set(keys).size).toBe(2);
    expect((await ctx.get()).last_seq).toBe(2);
  });

  it('retries 503 (Retry-After honoured) up to maxRetries, then throws ServiceUnavailableError', async () => {
    const faulty = faultyFetch(() => unavailable());
    const fastpaca = testClient({ fetch: faulty.fetch, maxRetries: 3 });
    const error = await fastpaca.context(uniqueId('busy'), { budget: 100 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ServiceUnavailableError);
    expect(error).toMatchObject({ status: 503, code: 'unavailable' });
    expect(faulty.seen).toHaveLength(4);
  });

  it('a 503 followed by success succeeds; compaction reuses its key too', async () => {
    const id = uniqueId('compact-retry');
    const ctx = await testClient().context(id, { budget: 100 });
    await ctx.append(hello);
    let compacts = 0;
    const faulty = faultyFetch((_, request) => {
      if (request.url.endsWith('/compact')) {
        compacts += 1;
        return compacts === 1 ? 'lost' : compacts === 2 ? unavailable() : 'pass';
      }
      return 'pass';
    });
    const retrying = await testClient({ fetch: faulty.fetch }).context(id);
    const window = await retrying.context();
    const result = await retrying.compact(window.messages, { ifVersion: window.version });
    expect(result.version).toBe(window.version + 1);
    const bodies = faulty.seen.filter((request) => request.url.endsWith('/compact')).map((request) => request.body);
    expect(new Set(bodies).size).toBe(1);
  });

  it('never retries a 409', async () => {
    const id = uniqueId('conflict');
    const ctx = await testClient().context(id, { budget: 100 });
    await ctx.append(hello);
    const faulty = faultyFetch(() => 'pass');
    const counted = await testClient({ fetch: faulty.fetch, maxRetries: 5 }).context(id);
    const error = await counted.append(hello, { ifVersion: 1 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConflictError);
    expect(faulty.seen).toHaveLength(1);
  });

  it('retries 429 rate_limited after Retry-After, never 429 quota_exceeded', async () => {
    const limited = faultyFetch((attempt) =>
      attempt === 1 ? jsonResponse(429, { error: 'rate_limited', message: 'Slow down.' }, { 'retry-after': '0' }) : 'pass',
    );
    const ctx = await testClient({ fetch: limited.fetch, maxRetries: 3 }).context(uniqueId('rate'), { budget: 100 });
    expect(limited.seen).toHaveLength(2);
    const over = faultyFetch(() => jsonResponse(429, { error: 'quota_exceeded', message: 'Full.' }, { 'retry-after': '0' }));
    const error = await testClient({ fetch: over.fetch, maxRetries: 3 })
      .context(ctx.id)
      .then((handle) => handle.append(hello))
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RateLimitError);
    expect(error).toMatchObject({ code: 'quota_exceeded' });
    expect(over.seen).toHaveLength(1);
  });

  it('never retries other 4xx', async () => {
    const faulty = faultyFetch(() => 'pass');
    const ctx = await testClient({ fetch: faulty.fetch, maxRetries: 5 }).context(uniqueId('missing'));
    await expect(ctx.get()).rejects.toBeInstanceOf(NotFoundError);
    expect(faulty.seen).toHaveLength(1);
  });

  it('times out each try after timeoutMs and retries; then throws APITimeoutError', async () => {
    let attempts = 0;
    const hanging: typeof fetch = () => {
      attempts += 1;
      return new Promise<Response>(() => undefined); // ignores its signal: the client must still give up
    };
    const fastpaca = createClient({ baseUrl: serverUrl(), fetch: hanging, timeoutMs: 50, maxRetries: 1 });
    const started = Date.now();
    const error = await fastpaca.deleteContext('slow').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(APITimeoutError);
    expect(error).toBeInstanceOf(APIConnectionError);
    expect(attempts).toBe(2);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('a network failure with no retries left is an APIConnectionError', async () => {
    const fastpaca = createClient({ baseUrl: serverUrl(), fetch: faultyFetch(() => 'network').fetch, maxRetries: 0 });
    const error = await fastpaca.deleteContext('x').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(APIConnectionError);
    expect((error as APIConnectionError).cause).toBeInstanceOf(TypeError);
  });

  it('the caller’s signal aborts without retrying', async () => {
    const faulty = faultyFetch(() => 'network');
    const controller = new AbortController();
    controller.abort();
    const ctx = await testClient({ fetch: faulty.fetch, maxRetries: 5 }).context('aborted');
    await expect(ctx.get({ signal: controller.signal })).rejects.toBeInstanceOf(APIUserAbortError);
    expect(faulty.seen.length).toBeLessThanOrEqual(1);
  });

  it('waits out a server that is still starting (connection refused, then 503 not_ready)', async () => {
    const port = await freePort();
    const apiKey = `test-${randomBytes(8).toString('hex')}`;
    const dataDirectory = mkdtempSync(join(tmpdir(), 'fastpaca-sdk-starting-'));
    // The client's first try goes out before the process exists.
    const seen: number[] = [];
    const fastpaca = createClient({
      baseUrl: `http://127.0.0.1:${port}`,
      apiKey,
      maxRetries: 8,
      fetch: async (input, init) => {
        try {
          const response = await fetch(input, init);
          seen.push(response.status);
          return response;
        } catch (error) {
          seen.push(0);
          throw error;
        }
      },
    });
    const pending = fastpaca.context('starting', { budget: 100 });
    const server = spawnServer(port, apiKey, dataDirectory);
    try {
      const ctx = await pending;
      expect((await ctx.get()).status).toBe('active');
      // Refused connections (0) and 503 not_ready until the PUT (200) and the GET (200) went through.
      expect(seen[0]).toBe(0);
      expect(seen.slice(-2)).toEqual([200, 200]);
      expect(seen.slice(0, -2).every((status) => status === 0 || status === 503)).toBe(true);
    } finally {
      await stopProcess(server.child);
      rmSync(dataDirectory, { recursive: true, force: true });
    }
  }, 30_000);
});

describe('backoff', () => {
  it('grows from 0.5 s to 8 s with up to 25% jitter', () => {
    for (let attempt = 0; attempt < 8; attempt += 1) {
      const ceiling = Math.min(0.5 * 2 ** attempt, 8);
      const delay = backoffSeconds(attempt, undefined);
      expect(delay).toBeLessThanOrEqual(ceiling);
      expect(delay).toBeGreaterThanOrEqual(ceiling * 0.75);
    }
  });

  it('honours Retry-After in seconds or as a date, within a minute', () => {
    expect(backoffSeconds(0, new Headers({ 'retry-after': '1' }))).toBe(1);
    expect(backoffSeconds(3, new Headers({ 'retry-after': '0' }))).toBe(0);
    const date = new Date(Date.now() + 3_000).toUTCString();
    expect(backoffSeconds(0, new Headers({ 'retry-after': date }))).toBeGreaterThan(1);
    expect(backoffSeconds(0, new Headers({ 'retry-after': '3600' }))).toBeLessThanOrEqual(0.5);
  });
});

describe('error classes', () => {
  it('map statuses in one place and carry status, code, message, body and headers', () => {
    const cases: Array<[number, abstract new (...args: never[]) => APIError]> = [
      [400, BadRequestError],
      [401, AuthenticationError],
      [403, PermissionDeniedError],
      [404, NotFoundError],
      [409, ConflictError],
      [413, PayloadTooLargeError],
      [429, RateLimitError],
      [500, InternalServerError],
      [502, InternalServerError],
      [503, ServiceUnavailableError],
    ];
    for (const [status, errorClass] of cases) {
      const body = { error: 'some_code', message: 'A sentence.' };
      const error = APIError.fromResponse(status, body, new Headers({ 'x-test': '1' }));
      expect(error).toBeInstanceOf(errorClass);
      expect(error).toBeInstanceOf(APIError);
      expect(error).toMatchObject({ status, code: 'some_code', body, name: errorClass.name });
      expect(error.message).toBe(`${status} some_code: A sentence.`);
      expect(error.headers.get('x-test')).toBe('1');
    }
    const plain = APIError.fromResponse(418, 'teapot', new Headers());
    expect(plain.constructor).toBe(APIError);
    expect(plain).toMatchObject({ code: 'unknown', body: 'teapot' });
  });

  it('a real 404 carries the server’s sentence', async () => {
    const fastpaca = createClient({ baseUrl: serverUrl(), apiKey: serverApiKey() });
    const error = await (await fastpaca.context('nobody-here')).get().catch((caught: unknown) => caught);
    expect((error as NotFoundError).message).toBe("404 not_found: Context 'nobody-here' does not exist.");
  });
});
