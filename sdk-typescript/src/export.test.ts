/**
 * `ctx.export()`: the whole history from `GET …/export` (JSON Lines), against
 * the real server (the same messages as paging `GET …/messages`), and with an
 * injected fetch for what a real server does rarely (503
 * `archive_unavailable`, a body that breaks off in the middle).
 */

import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import { APIConnectionError, APIUserAbortError, FastpacaError, NotFoundError, ServiceUnavailableError } from './errors.js';
import { readLines } from './_ndjson.js';
import { testClient, uniqueId } from './_testing/helpers.js';
import type { FastpacaMessage, LogMessage } from './types.js';

const COUNT = 120;

function history(): FastpacaMessage[] {
  return Array.from({ length: COUNT }, (_, index): FastpacaMessage => {
    switch (index % 3) {
      case 0:
        return { role: 'user', parts: [{ type: 'text', text: `question ${index}: é ✓ 🦙, a line\nbreak and a U+2028 \u2028` }] };
      case 1:
        return {
          id: `call-${index}`,
          role: 'assistant',
          parts: [{ type: 'tool_call', id: `c${index}`, name: 'add', input: [1, 2] }],
          metadata: { step: index },
        };
      default:
        return { role: 'tool', parts: [{ type: 'tool_result', tool_call_id: `c${index - 1}`, output: 3 }] };
    }
  });
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const collected: T[] = [];
  for await (const item of items) {
    collected.push(item);
  }
  return collected;
}

/** A body of `pieces`, one per read; an `Error` piece breaks it off there. */
function streamOf(...pieces: Array<string | Error>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const left = [...pieces];
  return new ReadableStream({
    pull(controller) {
      const piece = left.shift();
      if (piece === undefined) {
        controller.close();
      } else if (piece instanceof Error) {
        controller.error(piece);
      } else {
        controller.enqueue(encoder.encode(piece));
      }
    },
  });
}

const line = (seq: number) => JSON.stringify({ seq, id: `m${seq}`, role: 'user', parts: [], token_count: 1 });
const LINES = [1, 2, 3, 4, 5, 6, 7].map(line);
const BODY = LINES.map((text) => `${text}\n`).join('');

describe('ctx.export against the server', () => {
  it('yields the whole history, as messages() pages it', async () => {
    const fastpaca = testClient();
    const ctx = await fastpaca.context(uniqueId('export'), { budget: 1_000_000 });
    const messages = history();
    await ctx.appendMany(messages.slice(0, 50));
    for (const message of messages.slice(50)) {
      await ctx.append(message);
    }
    const exported = await collect(ctx.export());
    const page = await ctx.messages({ limit: 1000 });
    expect(exported).toEqual(page.messages);
    expect(exported.map((message) => message.seq)).toEqual(Array.from({ length: COUNT }, (_, index) => index + 1));
    expect(exported[0]?.parts).toEqual(messages[0]?.parts);
    expect((await ctx.get()).archived_seq).toBe(0); // this server has no archive
  });

  it('stops early on break, and yields nothing for an empty context', async () => {
    const fastpaca = testClient();
    const ctx = await fastpaca.context(uniqueId('export-break'), { budget: 1_000_000 });
    await ctx.appendMany(history().slice(0, 10));
    const first: LogMessage[] = [];
    for await (const message of ctx.export()) {
      first.push(message);
      if (first.length === 3) {
        break;
      }
    }
    expect(first.map((message) => message.seq)).toEqual([1, 2, 3]);
    const empty = await fastpaca.context(uniqueId('export-empty'), { budget: 1000 });
    expect(await collect(empty.export())).toEqual([]);
  });

  it('an unknown context is NotFoundError', async () => {
    const ctx = await testClient().context(uniqueId('export-missing'));
    await expect(ctx.export().next()).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('ctx.export failures', () => {
  const archiveDown = () =>
    new Response(JSON.stringify({ error: 'archive_unavailable', message: 'The archive is down.' }), {
      status: 503,
      headers: { 'content-type': 'application/json', 'retry-after': '0' },
    });

  it('retries 503 archive_unavailable like unavailable', async () => {
    const urls: string[] = [];
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      maxRetries: 2,
      fetch: async (input, init) => {
        urls.push(String(input));
        expect(new Headers(init?.headers).get('accept')).toBe('application/x-ndjson');
        return urls.length <= 2 ? archiveDown() : new Response(streamOf(BODY), { headers: { 'content-type': 'application/x-ndjson' } });
      },
    });
    const exported = await collect((await fastpaca.context('chat_42')).export());
    expect(exported.map((message) => message.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(urls).toEqual(Array(3).fill('http://fastpaca.test/v1/contexts/chat_42/export'));
  });

  it('throws ServiceUnavailableError archive_unavailable once the retries are spent', async () => {
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      maxRetries: 1,
      fetch: async () => {
        calls += 1;
        return archiveDown();
      },
    });
    const failure = await (await fastpaca.context('chat')).export().next().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ServiceUnavailableError);
    expect(failure).toMatchObject({ status: 503, code: 'archive_unavailable' });
    expect(calls).toBe(2);
  });

  it('starts a download that breaks off again, without a repeat', async () => {
    const bodies = [
      streamOf(BODY.slice(0, LINES[0]!.length * 3 + 5), new TypeError('terminated')), // in the fourth line
      streamOf(...BODY.match(/.{1,7}/gs)!),
    ];
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () => new Response(bodies[calls++] ?? streamOf(BODY), { headers: { 'retry-after': '0' } }),
    });
    const exported = await collect((await fastpaca.context('chat')).export());
    expect(exported.map((message) => message.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(calls).toBe(2);
  });

  it('gives up after maxRetries bodies that break off without a new message', async () => {
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      maxRetries: 2,
      fetch: async () => {
        calls += 1;
        return new Response(streamOf(BODY.slice(0, 10), new TypeError('terminated')), { headers: { 'retry-after': '0' } });
      },
    });
    await expect((await fastpaca.context('chat')).export().next()).rejects.toBeInstanceOf(APIConnectionError);
    expect(calls).toBe(3);
  });

  it('a line that is not a message is a FastpacaError, not retried', async () => {
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () => {
        calls += 1;
        return new Response(streamOf('{"seq": 1}\n[1, 2]\n'));
      },
    });
    const exported = (await fastpaca.context('chat')).export();
    expect((await exported.next()).value).toEqual({ seq: 1 });
    const failure = await exported.next().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(FastpacaError);
    expect(failure).not.toBeInstanceOf(APIConnectionError);
    expect(calls).toBe(1);
  });

  it('stops when its signal aborts', async () => {
    const controller = new AbortController();
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () =>
        new Response(
          new ReadableStream({
            start(stream) {
              stream.enqueue(new TextEncoder().encode(`${line(1)}\n`));
            },
          }),
        ),
    });
    const exported = (await fastpaca.context('live')).export({ signal: controller.signal });
    expect((await exported.next()).value).toMatchObject({ seq: 1 });
    setTimeout(() => controller.abort(), 10);
    await expect(exported.next()).rejects.toBeInstanceOf(APIUserAbortError);
  });
});

describe('readLines', () => {
  it('cuts only at \\n (and \\r\\n), across chunk borders, decoding characters split between chunks', async () => {
    const bytes = new TextEncoder().encode('{"a": "é\u2028🦙"}\n\n{"b": 1}\r\n{"c": 2}');
    for (const size of [1, 2, 3, 5]) {
      const chunks: Uint8Array[] = [];
      for (let start = 0; start < bytes.length; start += size) {
        chunks.push(bytes.slice(start, start + size));
      }
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          chunks.forEach((chunk) => controller.enqueue(chunk));
          controller.close();
        },
      });
      expect(await collect(readLines(body))).toEqual(['{"a": "é\u2028🦙"}', '{"b": 1}', '{"c": 2}']);
    }
  });
});
