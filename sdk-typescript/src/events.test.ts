/**
 * `ctx.events()` over the server's Server-Sent Events feed: against the real
 * server (replay, live, the end after `tombstoned`), and with an injected
 * fetch for what a real server does rarely (a feed that drops in the middle
 * of a batch, or that the server ends for a slow consumer).
 */

import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import { APIConnectionError, APIUserAbortError, NotFoundError } from './errors.js';
import { readServerSentEvents, type ServerSentEvent } from './_sse.js';
import { testClient, uniqueId } from './_testing/helpers.js';
import type { ContextEvent, FastpacaMessage } from './types.js';

const user = (text: string): FastpacaMessage => ({ role: 'user', parts: [{ type: 'text', text }] });

const message = (seq: number, version: number) =>
  `event: message\ndata: {"type":"message","version":${version},"seq":${seq}}\n\n`;
const context = (version: number, lastSeq: number) =>
  `id: ${version}\nevent: context\ndata: {"type":"context","version":${version},"cause":"appended",` +
  `"last_seq":${lastSeq},"used_tokens":1,"needs_compaction":false}\n\n`;
const tombstoned = (version: number) =>
  `id: ${version}\nevent: tombstoned\ndata: {"type":"tombstoned","version":${version}}\n\n`;

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

describe('ctx.events against the server', () => {
  it('replays, follows live, and ends after tombstoned', async () => {
    const fastpaca = testClient();
    const ctx = await fastpaca.context(uniqueId('events'), { budget: 1_000_000 });
    await ctx.append(user('one'));
    await ctx.appendMany([user('two'), user('three')]);
    const seen: ContextEvent[] = [];
    const later = setTimeout(() => {
      void ctx.append(user('four')).then(() => fastpaca.deleteContext(ctx.id));
    }, 200);
    try {
      for await (const event of ctx.events()) {
        seen.push(event);
      }
    } finally {
      clearTimeout(later);
    }
    expect(seen.map((event) => [event.type, event.data.version, event.cursor])).toEqual([
      ['context', 1, '1'],
      ['message', 2, '1'],
      ['context', 2, '2'],
      ['message', 3, '2'],
      ['message', 3, '2'],
      ['context', 3, '3'],
      ['message', 4, '3'],
      ['context', 4, '4'],
      ['tombstoned', 5, '5'],
    ]);
    const first = seen[1]?.data;
    expect(first?.type === 'message' ? first.message?.parts : undefined).toEqual([{ type: 'text', text: 'one' }]);

    const lean: ContextEvent[] = [];
    for await (const event of ctx.events({ cursor: 3, includeMessages: false })) {
      lean.push(event);
    }
    expect(lean.map((event) => event.data)).toEqual([
      { type: 'message', version: 4, seq: 4 },
      { type: 'context', version: 4, cause: 'appended', last_seq: 4, used_tokens: expect.any(Number), needs_compaction: false },
      { type: 'tombstoned', version: 5 },
    ]);
  });

  it('an unknown context is NotFoundError', async () => {
    const ctx = await testClient().context(uniqueId('missing'));
    await expect(ctx.events().next()).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('ctx.events resuming', () => {
  it('reconnects after the last whole version when a feed ends, without a repeat', async () => {
    const urls: string[] = [];
    const feeds = [
      // The batch of version 3 is cut off after its first message (the server ended a slow feed) …
      ': ping\n\n' + message(1, 2) + context(2, 1) + message(2, 3) +
        'event: error\ndata: {"type":"error","version":2,"reason":"slow_consumer","message":"slow"}\n\n',
      // … and the resumed feed sends it again, whole.
      message(2, 3) + message(3, 3) + context(3, 3) + tombstoned(4),
    ];
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async (input, init) => {
        urls.push(String(input));
        expect(new Headers(init?.headers).get('accept')).toBe('text/event-stream');
        return new Response(streamOf(feeds[urls.length - 1] ?? ''), {
          headers: { 'content-type': 'text/event-stream', 'retry-after': '0' },
        });
      },
    });
    const ctx = await fastpaca.context('chat_42');
    const events: ContextEvent[] = [];
    for await (const event of ctx.events({ cursor: 1, includeMessages: false })) {
      events.push(event);
    }
    expect(events.map((event) => [event.type, event.data.version, event.cursor])).toEqual([
      ['message', 2, '1'],
      ['context', 2, '2'],
      ['message', 3, '2'],
      ['message', 3, '2'],
      ['context', 3, '3'],
      ['tombstoned', 4, '4'],
    ]);
    expect(urls).toEqual([
      'http://fastpaca.test/v1/contexts/chat_42/events?cursor=1&include_messages=false',
      'http://fastpaca.test/v1/contexts/chat_42/events?cursor=2&include_messages=false',
    ]);
  });

  it('gives up after maxRetries feeds that close without a new version', async () => {
    let calls = 0;
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      maxRetries: 2,
      fetch: async () => {
        calls += 1;
        return new Response(streamOf(': nothing\n\n' + message(1, 2)), { headers: { 'retry-after': '0' } });
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
              stream.enqueue(new TextEncoder().encode(context(1, 0)));
            },
          }),
        ),
    });
    const events = (await fastpaca.context('live')).events({ signal: controller.signal });
    expect((await events.next()).value).toMatchObject({ type: 'context', cursor: '1', data: { version: 1 } });
    setTimeout(() => controller.abort(), 10);
    await expect(events.next()).rejects.toBeInstanceOf(APIUserAbortError);
  });

  it('an error answer is thrown as the APIError', async () => {
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async () =>
        new Response(JSON.stringify({ error: 'not_found', message: "Context 'x' does not exist." }), { status: 404 }),
    });
    await expect((await fastpaca.context('x')).events().next()).rejects.toBeInstanceOf(NotFoundError);
  });
});
