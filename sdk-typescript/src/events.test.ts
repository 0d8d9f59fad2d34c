/**
 * `ctx.events()` over a Server-Sent Events feed. The server does not serve
 * `GET …/events` yet (docs/architecture.md, "not built yet"), so the feed
 * here comes from an injected fetch, in the event-stream format.
 */

import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import { APIConnectionError, APIUserAbortError, NotFoundError } from './errors.js';
import { readServerSentEvents, type ServerSentEvent } from './_sse.js';
import type { ContextEvent } from './types.js';

function streamOf(...pieces: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      pieces.forEach((piece) => controller.enqueue(encoder.encode(piece)));
      controller.close();
    },
  });
}

async function collect(body: ReadableStream<Uint8Array>): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of readServerSentEvents(body)) {
    events.push(event);
  }
  return events;
}

describe('readServerSentEvents', () => {
  it('parses events, ids, multi-line data, comments and any line ending, across chunk borders', async () => {
    const events = await collect(
      streamOf(
        '\uFEFF: keep-alive\n',
        'event: message.appended\nid: 1\ndata: {"seq":',
        '1}\n\n',
        'data: line one\r\ndata: line two\r\n\r',
        '\nevent: window.compacted\rid: 2\rdata:no-space\r\r',
        'id: 3\n\n',
        'data: after id 3\n\n',
        'data: unterminated',
      ),
    );
    expect(events).toEqual([
      { event: 'message.appended', data: '{"seq":1}', id: '1' },
      { event: undefined, data: 'line one\nline two', id: '1' },
      { event: 'window.compacted', data: 'no-space', id: '2' },
      { event: undefined, data: 'after id 3', id: '3' },
    ]);
  });
});

describe('ctx.events', () => {
  it('yields parsed events and reconnects after the last cursor when the feed closes', async () => {
    const urls: string[] = [];
    const feeds = [
      'id: 4\nevent: message.appended\ndata: {"seq":4}\n\nid: 5\nevent: message.appended\ndata: {"seq":5}\n\n',
      'id: 6\nevent: window.compacted\ndata: {"version":9}\n\n',
    ];
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async (input, init) => {
        urls.push(String(input));
        expect(new Headers(init?.headers).get('accept')).toBe('text/event-stream');
        return new Response(streamOf(feeds[urls.length - 1] ?? ''), { headers: { 'content-type': 'text/event-stream', 'retry-after': '0' } });
      },
    });
    const ctx = await fastpaca.context('chat_42');
    const events: ContextEvent[] = [];
    for await (const event of ctx.events({ cursor: 3 })) {
      events.push(event);
      if (events.length === 3) {
        break;
      }
    }
    expect(events).toEqual([
      { type: 'message.appended', cursor: '4', data: { seq: 4 } },
      { type: 'message.appended', cursor: '5', data: { seq: 5 } },
      { type: 'window.compacted', cursor: '6', data: { version: 9 } },
    ]);
    expect(urls).toEqual([
      'http://fastpaca.test/v1/contexts/chat_42/events?cursor=3',
      'http://fastpaca.test/v1/contexts/chat_42/events?cursor=5',
    ]);
  });

  it('gives up after maxRetries feeds that close without an event', async () => {
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      maxRetries: 2,
      fetch: async () => {
        calls += 1;
        return new Response(streamOf(': nothing\n\n'), { headers: { 'retry-after': '0' } });
      },
    });
    const events = (await fastpaca.context('quiet')).events();
    await expect(events.next()).rejects.toBeInstanceOf(APIConnectionError);
    expect(calls).toBe(3);
  });

  it('stops when its signal aborts', async () => {
    const controller = new AbortController();
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () =>
        new Response(
          new ReadableStream({
            start(stream) {
              stream.enqueue(new TextEncoder().encode('data: {"first":true}\n\n'));
            },
          }),
        ),
    });
    const events = (await fastpaca.context('live')).events({ signal: controller.signal });
    expect((await events.next()).value).toEqual({ type: 'message', cursor: undefined, data: { first: true } });
    setTimeout(() => controller.abort(), 10);
    await expect(events.next()).rejects.toBeInstanceOf(APIUserAbortError);
  });

  it('an error answer is thrown as the APIError', async () => {
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () =>
        new Response(JSON.stringify({ error: 'not_found', message: 'No route for GET /v1/contexts/x/events.' }), { status: 404 }),
    });
    await expect((await fastpaca.context('x')).events().next()).rejects.toBeInstanceOf(NotFoundError);
  });
});
