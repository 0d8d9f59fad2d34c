/**
 * `ctx.compactions()`, `ctx.preview()`, the context's compaction counters and
 * the `compaction_record` event, against the real server; and, with an
 * injected fetch, a version cut off after its `compaction_record` being sent
 * again whole.
 */

import { describe, expect, expectTypeOf, it } from 'vitest';

import { createClient } from './client.js';
import type { FastpacaContext } from './context.js';
import { BadRequestError } from './errors.js';
import { testClient, uniqueId } from './_testing/helpers.js';
import type { CompactionRecord, ContextEvent, FastpacaMessage, Pin, Policy, Strategy } from './types.js';

const user = (text: string): FastpacaMessage => ({ role: 'user', parts: [{ type: 'text', text }] });

const LAST_TWO = { strategy: 'last_n', config: { limit: 2 } } as const satisfies Policy;
const LAST_THREE = { strategy: 'last_n', config: { limit: 3 } } as const satisfies Policy;

/** A context keeping the last 2 messages, with 4 appended. */
async function lastTwoOfFour(prefix: string): Promise<FastpacaContext> {
  const ctx = await testClient().context(uniqueId(prefix), { budget: 1000, policy: LAST_TWO });
  for (let n = 1; n <= 4; n += 1) {
    await ctx.append(user(`message ${n}`));
  }
  return ctx;
}

function removedSeqs(records: readonly CompactionRecord[]): number[] {
  const seqs = new Set<number>();
  for (const record of records) {
    for (const action of record.actions) {
      for (const [first, last] of action.removed) {
        for (let seq = first ?? 0; seq <= (last ?? -1); seq += 1) {
          seqs.add(seq);
        }
      }
    }
  }
  return [...seqs].sort((a, b) => a - b);
}

describe('compactions', () => {
  it('counts them on the context', async () => {
    const fastpaca = testClient();
    const id = uniqueId('counters');
    const created = await fastpaca.putContext(id, { budget: 1000, policy: LAST_TWO });
    expect([created.window_messages, created.compactions, created.last_compaction]).toEqual([0, 0, null]);
    const ctx = await fastpaca.context(id);
    for (let n = 1; n <= 4; n += 1) {
      await ctx.append(user(`message ${n}`));
    }
    const info = await ctx.get();
    expect(info.window_messages).toBe(2);
    expect(info.compactions).toBeGreaterThanOrEqual(1);
    expect(info.last_compaction?.policy).toBe('last_n');
    expect([info.summary_failures, info.last_summary_error]).toEqual([0, null]);
  });

  it('lists the records, with the seqs that left the window, page by page', async () => {
    const ctx = await lastTwoOfFour('records');
    const page = await ctx.compactions();
    expect(page.has_more).toBe(false);
    expect(page.compactions).toBe((await ctx.get()).compactions);
    expect(removedSeqs(page.records)).toEqual([1, 2]);
    const [record] = page.records;
    expect(record).toMatchObject({ number: 1, cause: 'append', policy: 'last_n', outcome: 'applied' });
    expect(record?.actions[0]).toMatchObject({ step: 0, policy: 'last_n', reason: 'over_message_limit', changed: [] });
    expect((await ctx.compactions({ after: record?.number })).records).toEqual([]);

    const window = await ctx.context();
    await ctx.compact(window.messages.slice(-1), { ifVersion: window.version });
    const first = await ctx.compactions({ limit: 1 });
    expect([first.records.length, first.has_more]).toEqual([1, true]);
    const second = await ctx.compactions({ after: first.records[0]?.number, limit: 1 });
    expect(second.has_more).toBe(false);
    expect(second.records.map((r) => [r.number, r.cause, r.policy, r.actions[0]?.reason])).toEqual([
      [2, 'compact', 'client', 'replaced'],
    ]);
    expect(removedSeqs(second.records)).toEqual([3]);
  });
});

describe('preview', () => {
  it('shows the window under another policy, and changes nothing', async () => {
    const ctx = await lastTwoOfFour('preview');
    const before = await ctx.get();
    const preview = await ctx.preview({ policy: LAST_THREE });
    expect(preview.messages.map((m) => m.seq)).toEqual([2, 3, 4]);
    expect(preview.dropped).toEqual([{ from_seq: 1, to_seq: 1, count: 1 }]);
    expect(preview.config).toMatchObject({ token_budget: 1000, policy: LAST_THREE, tokenizer: 'o200k_base' });
    expect(preview.breakdown.map((b) => b.seq)).toEqual([2, 3, 4]);
    expect(preview.used_tokens).toBe(preview.breakdown.reduce((sum, b) => sum + b.token_count, 0));
    expect(preview.segments).toEqual([{ type: 'log', from_seq: 2, to_seq: 4, count: 3, tokens: preview.used_tokens }]);
    expect([preview.changed, preview.refused, preview.needs_compaction]).toEqual([[], [], false]);
    expect((await ctx.get()).version).toBe(before.version);

    const everything = await ctx.preview({ policy: { strategy: 'manual' }, triggerRatio: 0.9 });
    expect(everything.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    expect([everything.dropped, everything.config.trigger_ratio]).toEqual([[], 0.9]);
    const pipeline = await ctx.preview({
      policy: { strategy: 'pipeline', config: { steps: [{ strategy: 'last_n', config: { limit: 1 } }] } },
    });
    expect(pipeline.messages.map((m) => m.seq)).toEqual([4]);
    expect(pipeline.dropped).toEqual([{ from_seq: 1, to_seq: 3, count: 3 }]);
    const refused = await ctx.preview({ tokenBudget: 1, policy: { strategy: 'budget' } });
    expect(refused.refused.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  it('types the strategies from the spec', () => {
    expectTypeOf<Strategy>().toEqualTypeOf<
      'last_n' | 'skip_parts' | 'budget' | 'time_window' | 'strip_tool_results' | 'pipeline' | 'summarize' | 'manual'
    >();
    expectTypeOf<Pin>().toEqualTypeOf<'system' | 'none'>();
    expectTypeOf({ strategy: 'my_policy', config: { anything: 1 } }).toExtend<Policy>();
  });
});

describe('summarize', () => {
  it('is refused by a server without a summarizer', async () => {
    const error = await testClient()
      .context(uniqueId('summarize'), { budget: 1000, policy: { strategy: 'summarize' } })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BadRequestError);
    expect((error as BadRequestError).code).toBe('summarizer_not_configured');
  });
});

describe('the compaction_record event', () => {
  it('comes before the closing event of its version', async () => {
    const ctx = await lastTwoOfFour('record-events');
    await ctx.delete();
    const events: ContextEvent[] = [];
    for await (const event of ctx.events({ includeMessages: false })) {
      events.push(event);
    }
    const records = events.flatMap((event, index) => (event.data.type === 'compaction_record' ? [{ event, index }] : []));
    expect(records.length).toBeGreaterThan(0);
    for (const { event, index } of records) {
      const data = event.data.type === 'compaction_record' ? event.data : undefined;
      expect(data?.record.version).toBe(event.data.version);
      const closing = events[index + 1];
      expect([closing?.type, closing?.data.version]).toEqual(['context', event.data.version]);
      // Resuming from a record's cursor sends its version again, whole.
      expect(event.cursor).toBe(String(event.data.version - 1));
      expect(closing?.cursor).toBe(String(event.data.version));
    }
    const numbers = new Set(records.map(({ event }) => (event.data.type === 'compaction_record' ? event.data.record.number : 0)));
    expect([...numbers]).toEqual((await ctx.compactions()).records.map((r) => r.number));
    expect(events.at(-1)?.type).toBe('tombstoned');
  });

  it('is held back with its version when a feed is cut, and sent again whole', async () => {
    const record = {
      number: 1,
      version: 3,
      first_version: 3,
      at: '2025-01-31T12:00:00.000Z',
      cause: 'summary',
      policy: 'summarize',
      outcome: 'applied',
      runs: 1,
      tokens_before: 900,
      tokens_after: 300,
      actions: [
        {
          step: 0,
          policy: 'summarize',
          reason: 'summarized',
          removed: [[1, 5]],
          changed: [],
          tokens_before: 900,
          tokens_after: 300,
          detail: '5 messages folded into summary 1',
          summary: 1,
        },
      ],
    } satisfies CompactionRecord;
    const recordEvent = `event: compaction_record\ndata: ${JSON.stringify({ type: 'compaction_record', version: 3, record })}\n\n`;
    const closing =
      'id: 3\nevent: context\ndata: {"type":"context","version":3,"cause":"summary","last_seq":9,"used_tokens":300,"needs_compaction":false}\n\n';
    const feeds = [recordEvent, recordEvent + closing, 'id: 4\nevent: tombstoned\ndata: {"type":"tombstoned","version":4}\n\n'];
    const urls: string[] = [];
    const fastpaca = createClient({
      baseUrl: 'http://fastpaca.test',
      fetch: async (input) => {
        urls.push(String(input));
        return new Response(feeds[urls.length - 1] ?? '', {
          headers: { 'content-type': 'text/event-stream', 'retry-after': '0' },
        });
      },
    });
    const ctx = await fastpaca.context('chat_42');
    const events: ContextEvent[] = [];
    for await (const event of ctx.events({ cursor: 2 })) {
      events.push(event);
    }
    expect(events.map((event) => [event.type, event.data.version, event.cursor])).toEqual([
      ['compaction_record', 3, '2'],
      ['context', 3, '3'],
      ['tombstoned', 4, '4'],
    ]);
    expect(events[0]?.data).toEqual({ type: 'compaction_record', version: 3, record });
    expect(urls.map((url) => new URL(url).searchParams.get('cursor'))).toEqual(['2', '2', '3']);
  });
});
