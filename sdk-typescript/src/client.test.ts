import { describe, expect, it } from 'vitest';

import { createClient } from './client.js';
import {
  AuthenticationError,
  BadRequestError,
  ConflictError,
  NotFoundError,
} from './errors.js';
import { serverApiKey, serverUrl, testClient, uniqueId } from './_testing/helpers.js';
import type { FastpacaMessage } from './types.js';

const user = (text: string): FastpacaMessage => ({ role: 'user', parts: [{ type: 'text', text }] });
const assistant = (text: string): FastpacaMessage => ({ role: 'assistant', parts: [{ type: 'text', text }] });

/** A fetch that records every request it passes on to the real one. */
function recordingFetch(): { fetch: typeof fetch; requests: Array<{ method: string; url: string; body: unknown }> } {
  const requests: Array<{ method: string; url: string; body: unknown }> = [];
  return {
    requests,
    fetch: async (input, init) => {
      const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
      requests.push({ method: init?.method ?? 'GET', url: String(input), body });
      return fetch(input, init);
    },
  };
}

describe('client.context', () => {
  it('creates the context with PUT when options are given, and sends nothing without', async () => {
    const recorder = recordingFetch();
    const fastpaca = testClient({ fetch: recorder.fetch });
    const id = uniqueId('put');

    const ctx = await fastpaca.context(id, {
      budget: 1_000_000,
      trigger: 0.7,
      policy: { strategy: 'last_n', config: { limit: 400 } },
      metadata: { user: 'ada' },
      tokenizer: 'cl100k_base',
    });
    expect(recorder.requests).toEqual([
      {
        method: 'PUT',
        url: `${serverUrl()}/contexts/${id}`,
        body: {
          token_budget: 1_000_000,
          trigger_ratio: 0.7,
          policy: { strategy: 'last_n', config: { limit: 400 } },
          tokenizer: 'cl100k_base',
          metadata: { user: 'ada' },
        },
      },
    ]);
    expect(ctx.id).toBe(id);

    const again = await fastpaca.context(id);
    expect(recorder.requests).toHaveLength(1);
    const info = await again.get();
    expect(info).toMatchObject({
      id,
      token_budget: 1_000_000,
      trigger_ratio: 0.7,
      policy: { strategy: 'last_n', config: { limit: 400 } },
      tokenizer: 'cl100k_base',
      metadata: { user: 'ada' },
      status: 'active',
      version: 1,
      last_seq: 0,
    });
  });

  it('an unchanged PUT changes nothing; a changed one replaces the config', async () => {
    const fastpaca = testClient();
    const id = uniqueId('put-again');
    const options = { budget: 4000, policy: { strategy: 'skip_parts' as const } };
    await fastpaca.context(id, options);
    const ctx = await fastpaca.context(id, options);
    expect((await ctx.get()).version).toBe(1);
    await fastpaca.context(id, { budget: 5000 });
    const updated = await ctx.get();
    expect(updated.version).toBe(2);
    expect(updated.policy).toEqual({ strategy: 'last_n', config: { limit: 200 } });
  });

  it('refuses a PUT without a budget with the server’s 400', async () => {
    const fastpaca = testClient();
    const error = await fastpaca.context(uniqueId('no-budget'), { trigger: 0.5 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BadRequestError);
    expect(error).toMatchObject({ status: 400, code: 'invalid_request' });
  });

  it('takes the base URL with or without /v1, with trailing slashes', async () => {
    const root = serverUrl().replace(/\/v1$/, '');
    for (const baseUrl of [root, `${root}/`, `${root}/v1`, `${root}/v1/`]) {
      const fastpaca = createClient({ baseUrl, apiKey: serverApiKey() });
      expect(fastpaca.baseUrl).toBe(`${root}/v1`);
      const ctx = await fastpaca.context(uniqueId('base'), { budget: 100 });
      expect((await ctx.get()).status).toBe('active');
    }
  });

  it('URL-encodes ids (the server decodes them)', async () => {
    const fastpaca = testClient();
    const id = `${uniqueId('colon')}:thread.1`;
    const ctx = await fastpaca.context(id, { budget: 100 });
    expect((await ctx.get()).id).toBe(id);
  });

  it('reads the cluster view: a single node is a cluster of one that leads itself', async () => {
    const cluster = await testClient().cluster();
    expect(cluster.ready).toBe(true);
    expect(cluster.leader).toBe(cluster.node_id);
    expect(cluster.members).toHaveLength(1);
    expect(cluster.members[0]).toMatchObject({ id: cluster.node_id, leader: true, reachable: true });
    expect(cluster.applied_index).toBeLessThanOrEqual(cluster.commit_index);
  });
});

describe('append', () => {
  it('answers seq, version and token_estimate, as the original SDK read them', async () => {
    const ctx = await testClient().context(uniqueId('append'), { budget: 8000 });
    const first = await ctx.append(user('What is the capital of France?'));
    expect(first).toMatchObject({ seq: 1, version: 2, token_estimate: 11, last_seq: 1, used_tokens: 11 });
    const second = await ctx.append(assistant('Paris.'));
    expect(second).toMatchObject({ seq: 2, version: 3, token_estimate: 6, used_tokens: 17 });
    expect(second.messages).toHaveLength(1);
  });

  it('stores a UIMessage as it is: id, metadata, every part byte for byte', async () => {
    const ctx = await testClient().context(uniqueId('ui'), { budget: 8000 });
    const message = {
      id: 'ui-message-1',
      role: 'assistant' as const,
      metadata: { model: 'gpt-4o-mini', pinned: false },
      parts: [
        { type: 'step-start' },
        { type: 'reasoning', text: 'Think.', state: 'done', providerMetadata: { openai: { itemId: 'r1' } } },
        { type: 'tool-weather', toolCallId: 'call_1', state: 'output-available', input: { city: 'Oslo' }, output: { c: 3 } },
        { type: 'text', text: 'Cold.', state: 'done' },
      ],
    };
    await ctx.append(message);
    const { messages } = await ctx.getTail();
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatchObject({ seq: 1, id: 'ui-message-1', role: 'assistant', metadata: message.metadata });
    expect(JSON.stringify(messages[0]?.parts)).toBe(JSON.stringify(message.parts));
  });

  it('uses tokenCount verbatim', async () => {
    const ctx = await testClient().context(uniqueId('count'), { budget: 8000 });
    const result = await ctx.append(user('Hello there'), { tokenCount: 42 });
    expect(result.token_estimate).toBe(42);
    expect((await ctx.context()).used_tokens).toBe(42);
  });

  it('refuses a stale ifVersion with a ConflictError and stores nothing', async () => {
    const ctx = await testClient().context(uniqueId('if-version'), { budget: 8000 });
    const { version } = await ctx.append(user('one'));
    await ctx.append(user('two'), { ifVersion: version });
    const error = await ctx.append(user('three'), { ifVersion: version }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error).toMatchObject({ status: 409, code: 'version_conflict' });
    expect((await ctx.get()).last_seq).toBe(2);
  });

  it('replays an idempotency key: the first answer again, nothing stored twice', async () => {
    const ctx = await testClient().context(uniqueId('idempotent'), { budget: 8000 });
    const first = await ctx.append(user('once'), { idempotencyKey: 'turn-1' });
    const replay = await ctx.append(user('once'), { idempotencyKey: 'turn-1' });
    expect(replay).toEqual(first);
    expect((await ctx.get()).last_seq).toBe(1);
    const reused = await ctx.append(user('other body'), { idempotencyKey: 'turn-1' }).catch((caught: unknown) => caught);
    expect(reused).toMatchObject({ status: 409, code: 'idempotency_key_reused' });
  });

  it('sends only the spec’s message fields (seq, created_at and UI extras stay behind)', async () => {
    const recorder = recordingFetch();
    const ctx = await testClient({ fetch: recorder.fetch }).context(uniqueId('fields'), { budget: 8000 });
    await ctx.append(user('hi'));
    const [stored] = (await ctx.getTail()).messages;
    await ctx.append({ ...stored!, id: 'copy' });
    const body = recorder.requests.at(-1)?.body as { message: Record<string, unknown> };
    expect(Object.keys(body.message).sort()).toEqual(['id', 'metadata', 'parts', 'role', 'token_count']);
  });

  it('appendMany stores a batch atomically with consecutive seqs and one version bump', async () => {
    const ctx = await testClient().context(uniqueId('batch'), { budget: 8000 });
    await ctx.append(user('before'));
    const result = await ctx.appendMany([user('a'), assistant('b'), user('c')]);
    expect(result).toMatchObject({ version: 3, last_seq: 4 });
    expect(result.seq).toBeUndefined();
    expect(result.messages.map((message) => message.seq)).toEqual([2, 3, 4]);
    const refused = await ctx
      .appendMany([user('d'), { role: 'user', parts: [] }])
      .catch((caught: unknown) => caught);
    expect(refused).toBeInstanceOf(BadRequestError);
    expect((await ctx.get()).last_seq).toBe(4);
  });
});

describe('the window', () => {
  it('context() answers the window; budgetTokens trims a copy; ifVersion checks', async () => {
    const ctx = await testClient().context(uniqueId('window'), { budget: 8000 });
    await ctx.append({ role: 'system', parts: [{ type: 'text', text: 'You are terse.' }] });
    await ctx.append(user('What is the capital of France?'));
    const { version } = await ctx.append(assistant('Paris.'));

    const window = await ctx.context();
    expect(window).toMatchObject({ version, budget_tokens: 8000, needs_compaction: false });
    expect(window.messages.map((message) => message.seq)).toEqual([1, 2, 3]);
    expect(window.segments).toEqual([{ type: 'log', from_seq: 1, to_seq: 3, count: 3, tokens: window.used_tokens }]);

    const trimmed = await ctx.context({ budgetTokens: 20 });
    expect(trimmed.budget_tokens).toBe(20);
    expect(trimmed.messages.map((message) => message.role)).toEqual(['system', 'assistant']);

    await expect(ctx.context({ ifVersion: version })).resolves.toMatchObject({ version });
    await expect(ctx.context({ ifVersion: version - 1 })).rejects.toMatchObject({ status: 409, code: 'version_conflict' });
  });

  it('compact keeps messages sent back as read and adds new ones; the log stays', async () => {
    const ctx = await testClient().context(uniqueId('compact'), { budget: 8000, policy: { strategy: 'manual' } });
    await ctx.appendMany([user('one'), assistant('two'), user('three'), assistant('four')]);
    const window = await ctx.context();
    const summary = { role: 'system', parts: [{ type: 'text', text: 'Summary: one, two.' }] };

    const result = await ctx.compact([summary, ...window.messages.slice(2)], { ifVersion: window.version });
    expect(result).toMatchObject({ version: window.version + 1, message_count: 3 });

    const compacted = await ctx.context();
    expect(compacted.messages.map((message) => message.seq)).toEqual([null, 3, 4]);
    expect(compacted.segments.map((segment) => segment.type)).toEqual(['replacement', 'log']);
    expect((await ctx.get()).last_seq).toBe(4);

    const stale = await ctx.compact([summary], { ifVersion: window.version }).catch((caught: unknown) => caught);
    expect(stale).toBeInstanceOf(ConflictError);
    const edited = { ...compacted.messages[1]!, parts: [{ type: 'text', text: 'changed' }] };
    await expect(ctx.compact([edited])).rejects.toMatchObject({ status: 400, code: 'kept_message_mismatch' });
  });
});

describe('reading the log', () => {
  it('getTail pages newest first, 100 by default, each page oldest first', async () => {
    const ctx = await testClient().context(uniqueId('tail'), { budget: 1_000_000 });
    await ctx.appendMany(Array.from({ length: 120 }, (_, index) => user(`message ${index + 1}`)));

    const page = await ctx.getTail();
    expect(page.messages).toHaveLength(100);
    expect(page.messages[0]?.seq).toBe(21);
    expect(page.messages.at(-1)?.seq).toBe(120);
    expect(page).toMatchObject({ last_seq: 120, has_more: true });

    const older = await ctx.getTail({ offset: 100, limit: 50 });
    expect(older.messages.map((message) => message.seq)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
    expect(older.has_more).toBe(false);
  });

  it('messages pages by seq range, oldest first', async () => {
    const ctx = await testClient().context(uniqueId('range'), { budget: 8000 });
    await ctx.appendMany(Array.from({ length: 10 }, (_, index) => user(`m${index + 1}`)));
    const page = await ctx.messages({ afterSeq: 2, beforeSeq: 9, limit: 3 });
    expect(page.messages.map((message) => message.seq)).toEqual([3, 4, 5]);
    expect(page.has_more).toBe(true);
    const rest = await ctx.messages({ afterSeq: 5, beforeSeq: 9 });
    expect(rest.messages.map((message) => message.seq)).toEqual([6, 7, 8]);
    expect(rest.has_more).toBe(false);
    expect((await ctx.messages()).messages).toHaveLength(10);
  });
});

describe('metadata and deletion', () => {
  it('updateMetadata merges (null removes) and checks ifVersion', async () => {
    const ctx = await testClient().context(uniqueId('metadata'), { budget: 100, metadata: { user: 'ada', draft: true } });
    const merged = await ctx.updateMetadata({ topic: 'geography', draft: null, nested: { a: 1 } });
    expect(merged.metadata).toEqual({ user: 'ada', topic: 'geography', nested: { a: 1 } });
    const again = await ctx.updateMetadata({ nested: { b: 2 } }, { ifVersion: merged.version });
    expect(again.metadata).toEqual({ user: 'ada', topic: 'geography', nested: { a: 1, b: 2 } });
    await expect(ctx.updateMetadata({ x: 1 }, { ifVersion: merged.version })).rejects.toBeInstanceOf(ConflictError);
  });

  it('deleteContext tombstones: reads work, writes get 409 context_tombstoned', async () => {
    const fastpaca = testClient();
    const id = uniqueId('delete');
    const ctx = await fastpaca.context(id, { budget: 100 });
    await ctx.append(user('kept'));
    expect((await fastpaca.deleteContext(id)).status).toBe('tombstoned');
    expect((await ctx.delete()).status).toBe('tombstoned');
    expect((await ctx.getTail()).messages).toHaveLength(1);
    await expect(ctx.append(user('refused'))).rejects.toMatchObject({ status: 409, code: 'context_tombstoned' });
  });

  it('redact erases one message; delete({ purge: true }) erases the context', async () => {
    const recorder = recordingFetch();
    const fastpaca = testClient({ fetch: recorder.fetch });
    const id = uniqueId('erase');
    const ctx = await fastpaca.context(id, { budget: 1000, metadata: { user: 'ada' } });
    await ctx.appendMany([user('public'), user('secret'), user('public too')]);
    const redacted = await ctx.redact(2);
    expect((await ctx.redact(2)).version).toBe(redacted.version);
    const log = (await ctx.getTail()).messages;
    expect(log.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(log[1]?.parts).toEqual([{ type: 'redacted' }]);
    await expect(ctx.redact(9)).rejects.toBeInstanceOf(NotFoundError);

    const purged = await ctx.delete({ purge: true });
    expect(purged).toMatchObject({ status: 'purged', metadata: {}, last_seq: 3 });
    expect(purged.purge?.purged_at).toMatch(/Z$/);
    expect((await ctx.getTail()).messages).toEqual([]);
    await expect(ctx.redact(1)).rejects.toMatchObject({ status: 409, code: 'context_purged' });
    const other = await fastpaca.context(`${id}-2`, { budget: 100 });
    expect((await fastpaca.deleteContext(other.id, { purge: true })).status).toBe('purged');
    expect((await fastpaca.deleteContext(`${id}-2`)).status).toBe('purged');
    const urls = recorder.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.url}`);
    expect(urls).toContain(`POST ${serverUrl()}/contexts/${id}/messages/2/redact`);
    expect(urls).toContain(`DELETE ${serverUrl()}/contexts/${id}?purge=true`);
    expect(urls).toContain(`DELETE ${serverUrl()}/contexts/${id}-2`);
  });
});

describe('errors', () => {
  it('an unknown context is a NotFoundError', async () => {
    const ctx = await testClient().context(uniqueId('missing'));
    const error = await ctx.get().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ status: 404, code: 'not_found' });
    expect((error as NotFoundError).message).toContain('does not exist');
    await expect(ctx.getTail()).rejects.toBeInstanceOf(NotFoundError);
    await expect(ctx.append(user('x'))).rejects.toBeInstanceOf(NotFoundError);
  });

  it('a missing or wrong API key is an AuthenticationError', async () => {
    for (const apiKey of [undefined, 'wrong']) {
      const fastpaca = createClient({ baseUrl: serverUrl(), apiKey, maxRetries: 0 });
      const error = await fastpaca.context(uniqueId('auth'), { budget: 100 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(AuthenticationError);
      expect(error).toMatchObject({ status: 401, code: 'unauthorized' });
      expect((error as AuthenticationError).headers.get('www-authenticate')).toBe('Bearer');
    }
  });

  it('bad input is a BadRequestError naming the code', async () => {
    const fastpaca = testClient();
    await expect(fastpaca.context('not/valid', { budget: 100 })).rejects.toMatchObject({ code: 'invalid_context_id' });
    const ctx = await fastpaca.context(uniqueId('bad'), { budget: 100 });
    const tooBig = await ctx.append(user('word '.repeat(200))).catch((caught: unknown) => caught);
    expect(tooBig).toBeInstanceOf(BadRequestError);
    expect(tooBig).toMatchObject({ code: 'message_exceeds_budget' });
    await expect(ctx.getTail({ limit: 5000 })).rejects.toMatchObject({ code: 'invalid_request' });
  });
});

describe('code written against the original @fastpaca/fastpaca 0.1', () => {
  it('runs its documented flow unchanged', async () => {
    // The calls and option names of the 0.1 SDK, as its README used them.
    const fastpaca = createClient({ baseUrl: serverUrl(), apiKey: serverApiKey() });
    const id = uniqueId('original');
    const ctx = await fastpaca.context(id, {
      budget: 1_000_000,
      trigger: 0.7,
      policy: { strategy: 'last_n', config: { limit: 400 } },
    });
    const { seq, version, token_estimate } = await ctx.append({
      role: 'user',
      parts: [{ type: 'text', text: 'What changed?' }],
    });
    expect([seq, version, typeof token_estimate]).toEqual([1, 2, 'number']);
    await ctx.append({ role: 'assistant', parts: [{ type: 'text', text: 'Nothing.' }] }, { ifVersion: version, tokenCount: 3 });

    const { messages, used_tokens, needs_compaction, segments } = await ctx.context({ budgetTokens: 1000 });
    expect(messages).toHaveLength(2);
    expect(used_tokens).toBeGreaterThan(0);
    expect(needs_compaction).toBe(false);
    expect(segments).toHaveLength(1);

    const window = await ctx.context();
    const summary = { role: 'system', parts: [{ type: 'text', text: 'User asked what changed.' }] };
    const compacted = await ctx.compact([summary, ...window.messages.slice(1)], { ifVersion: window.version });
    expect(compacted.version).toBe(window.version + 1);

    const tail = await ctx.getTail({ offset: 0, limit: 10 });
    expect(tail.messages.map((message) => message.seq)).toEqual([1, 2]);
    await fastpaca.deleteContext(id);
    expect((await ctx.get()).status).toBe('tombstoned');
  });
});

describe('client.listContexts', () => {
  it('pages contexts in id order, filters by prefix, metadata and search, and follows cursors', async () => {
    const fastpaca = testClient();
    const prefix = uniqueId('list');
    for (let n = 0; n < 5; n += 1) {
      await fastpaca.context(`${prefix}-${n}`, {
        budget: 100,
        metadata: { team: n % 2 === 0 ? 'blue' : 'red', rank: n, title: `Ünïcode ${n}` },
      });
    }
    await fastpaca.deleteContext(`${prefix}-4`);

    const first = await fastpaca.listContexts({ prefix, limit: 2 });
    expect(first.contexts.map((c) => c.id)).toEqual([`${prefix}-0`, `${prefix}-1`]);
    expect(first.has_more).toBe(true);
    expect(first.contexts[1]).toEqual(await (await fastpaca.context(`${prefix}-1`)).get());

    const all: string[] = [];
    for await (const context of fastpaca.iterContexts({ prefix, pageSize: 1 })) all.push(context.id);
    expect(all).toEqual([0, 1, 2, 3].map((n) => `${prefix}-${n}`));

    const red = await fastpaca.listContexts({ prefix, metadata: { team: 'red', rank: 3 } });
    expect(red.contexts.map((c) => c.id)).toEqual([`${prefix}-3`]);
    const searched = await fastpaca.listContexts({ prefix, q: 'ÜNÏCODE 2' });
    expect(searched.contexts.map((c) => c.id)).toEqual([`${prefix}-2`]);
    const gone = await fastpaca.listContexts({ prefix, status: 'tombstoned' });
    expect(gone.contexts.map((c) => c.id)).toEqual([`${prefix}-4`]);
    await expect(fastpaca.listContexts({ cursor: first.next_cursor ?? '', order: 'recent' })).rejects.toBeInstanceOf(
      BadRequestError,
    );
  });
});
