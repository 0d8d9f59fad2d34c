import { APIConnectionError, APIUserAbortError, FastpacaError } from './errors.js';
import { newIdempotencyKey } from './_ids.js';
import { readLines } from './_ndjson.js';
import { readServerSentEvents } from './_sse.js';
import { backoffSeconds, sleep, type Transport } from './_transport.js';
import { type AllFields, callOperation, type QueryOf, ROUTES, type Schemas } from './_wire.js';
import { ContextStream, type ContextStreamOptions, type StreamCallback } from './stream.js';
import type {
  AnthropicContextWindow,
  AnyContextWindow,
  AppendManyOptions,
  AppendOptions,
  AppendResult,
  CompactOptions,
  CompactResult,
  CompactionPage,
  CompactionsOptions,
  Context,
  DeleteOptions,
  ContextEvent,
  ContextWindow,
  EventsOptions,
  FastpacaMessage,
  FormattedWindowOptions,
  LiveEvent,
  LogMessage,
  MessagePage,
  MessagesOptions,
  Metadata,
  OpenAIContextWindow,
  Preview,
  PreviewOptions,
  ReplacementMessage,
  RequestOptions,
  TailOptions,
  UpdateMetadataOptions,
  WindowFormat,
  WindowOptions,
} from './types.js';

/**
 * One context (conversation) on the server: its message log and its LLM
 * window. Get one with `client.context(id, options)`. Every method is one
 * REST call (plus retries), except `stream`, which reads the window, runs the
 * model and appends the answer.
 */
export class FastpacaContext {
  /** The context id. */
  readonly id: string;
  private readonly transport: Transport;

  /** @internal Use `client.context(id)`. */
  constructor(transport: Transport, id: string) {
    this.transport = transport;
    this.id = id;
  }

  /** Config, metadata, status, version and counts (`GET /v1/contexts/{id}`). */
  get(options: RequestOptions = {}): Promise<Context> {
    return callOperation(this.transport, 'getContext', { contextId: this.id, signal: options.signal });
  }

  /**
   * Append one message; answers `{ seq, version, token_estimate, … }`. One
   * idempotency key per call (yours or a new one) is reused across retries,
   * so a retried append is stored once. `ifVersion` turns a stale write into
   * a `ConflictError` (409), and nothing is stored.
   */
  append(message: FastpacaMessage, options: AppendOptions = {}): Promise<AppendResult> {
    const wireMessage = toWireMessage(message);
    if (options.tokenCount !== undefined) {
      wireMessage.token_count = options.tokenCount;
    }
    return callOperation(this.transport, 'appendMessages', {
      contextId: this.id,
      body: {
        message: wireMessage,
        messages: undefined,
        idempotency_key: options.idempotencyKey ?? newIdempotencyKey(),
        if_version: options.ifVersion,
      } satisfies AllFields<Schemas['AppendRequest']>,
      signal: options.signal,
    });
  }

  /** Append 1–1,000 messages atomically (consecutive seqs, one version bump). */
  appendMany(messages: readonly FastpacaMessage[], options: AppendManyOptions = {}): Promise<AppendResult> {
    return callOperation(this.transport, 'appendMessages', {
      contextId: this.id,
      body: {
        message: undefined,
        messages: messages.map(toWireMessage),
        idempotency_key: options.idempotencyKey ?? newIdempotencyKey(),
        if_version: options.ifVersion,
      } satisfies AllFields<Schemas['AppendRequest']>,
      signal: options.signal,
    });
  }

  /**
   * The LLM window: `messages` in window order, `version`, `used_tokens`,
   * `needs_compaction`, `segments`. `budgetTokens` trims a copy for this
   * answer only. `format: 'openai'` answers Chat Completions `messages`,
   * `format: 'anthropic'` the Messages API `system` and `messages`, converted
   * by the server (after trimming) with the envelope fields unchanged and
   * `format` added.
   */
  context(options?: WindowOptions & { format?: 'ui' | undefined }): Promise<ContextWindow>;
  context(options: FormattedWindowOptions<'openai'>): Promise<OpenAIContextWindow>;
  context(options: FormattedWindowOptions<'anthropic'>): Promise<AnthropicContextWindow>;
  context(options: FormattedWindowOptions): Promise<AnyContextWindow>;
  context(options: WindowOptions & { format?: WindowFormat | undefined } = {}): Promise<AnyContextWindow> {
    return callOperation(this.transport, 'getWindow', {
      contextId: this.id,
      query: {
        budget_tokens: options.budgetTokens,
        if_version: options.ifVersion,
        // The default is not sent: a plain read stays as it was.
        format: options.format === 'ui' ? undefined : options.format,
      } satisfies AllFields<QueryOf<'getWindow'>>,
      signal: options.signal,
    });
  }

  /**
   * Replace the window wholesale; the log is untouched. Pass messages as
   * `context()` returned them (with their `seq`) to keep them, and new ones
   * (a summary) without: `compact([summary, ...window.messages.slice(4)])`.
   */
  compact(messages: readonly ReplacementMessage[], options: CompactOptions = {}): Promise<CompactResult> {
    return callOperation(this.transport, 'compactWindow', {
      contextId: this.id,
      body: {
        replacement: messages.map(toWireReplacement),
        idempotency_key: options.idempotencyKey ?? newIdempotencyKey(),
        if_version: options.ifVersion,
      } satisfies AllFields<Schemas['CompactRequest']>,
      signal: options.signal,
    });
  }

  /**
   * Why messages left the window: the compaction records numbered above
   * `after` (default 0), oldest first, at most `limit` (default 50).
   * `compactions` counts every compaction (the server keeps the newest 100
   * records); `has_more` says whether more records follow.
   */
  compactions(options: CompactionsOptions = {}): Promise<CompactionPage> {
    return callOperation(this.transport, 'listCompactions', {
      contextId: this.id,
      query: { after: options.after, limit: options.limit } satisfies AllFields<QueryOf<'listCompactions'>>,
      signal: options.signal,
    });
  }

  /**
   * The window the context would have under another config; nothing
   * changes. The log is run through the policy from the start, as if the
   * config (the context's own for what is left out) had always been in
   * force; compactions sent with `compact` and summaries are not replayed.
   */
  preview(options: PreviewOptions = {}): Promise<Preview> {
    return callOperation(this.transport, 'previewWindow', {
      contextId: this.id,
      body: {
        token_budget: options.tokenBudget,
        trigger_ratio: options.triggerRatio,
        policy: options.policy,
        tokenizer: options.tokenizer,
      } satisfies AllFields<Schemas['PreviewRequest']>,
      signal: options.signal,
    });
  }

  /** Newest-first paging (`offset`, `limit` default 100); each page oldest first. */
  getTail(options: TailOptions = {}): Promise<MessagePage> {
    return callOperation(this.transport, 'tailMessages', {
      contextId: this.id,
      query: { offset: options.offset, limit: options.limit } satisfies AllFields<QueryOf<'tailMessages'>>,
      signal: options.signal,
    });
  }

  /** Seq-range paging, oldest first: `afterSeq < seq < beforeSeq`, `limit` default 50. */
  messages(options: MessagesOptions = {}): Promise<MessagePage> {
    return callOperation(this.transport, 'listMessages', {
      contextId: this.id,
      query: {
        after_seq: options.afterSeq,
        before_seq: options.beforeSeq,
        limit: options.limit,
      } satisfies AllFields<QueryOf<'listMessages'>>,
      signal: options.signal,
    });
  }

  /**
   * The whole history, oldest first (`GET …/export`): every message from seq 1
   * to the newest one when the export started, each as `messages()` returns
   * it, parsed line by line from the server's JSON Lines as they arrive (the
   * archive's part included), so the history is never held in memory at once:
   *
   * ```ts
   * for await (const message of ctx.export()) { … }
   * ```
   *
   * A download that breaks off is started again, skipping the messages
   * already yielded (up to `maxRetries` times in a row without a new
   * message). While the server's archive is down it answers 503
   * `archive_unavailable`, retried like any 503, then thrown as
   * `ServiceUnavailableError`. Stop early with `break` or `signal`.
   */
  async *export(options: RequestOptions = {}): AsyncGenerator<LogMessage> {
    const { signal } = options;
    let handedOut = 0;
    let failures = 0;
    for (;;) {
      const response = await this.transport.open({
        method: 'GET',
        path: ROUTES.exportContext.path.replace(/^\/v1/, '').replace('{context_id}', encodeURIComponent(this.id)),
        headers: { accept: 'application/x-ndjson' },
        signal,
      });
      const before = handedOut;
      let failure: unknown;
      try {
        if (response.body === null) {
          throw new APIConnectionError('The export answered without a body.');
        }
        let seen = 0;
        for await (const line of readLines(response.body, signal)) {
          seen += 1;
          if (seen > handedOut) {
            handedOut += 1;
            yield parseExportLine(line);
          }
        }
        if (!signal?.aborted) {
          return;
        }
      } catch (error) {
        if (error instanceof FastpacaError && !(error instanceof APIConnectionError)) {
          throw error; // a line that is not a message: starting again would not help
        }
        failure = error;
      }
      if (signal?.aborted) {
        throw new APIUserAbortError();
      }
      // The body broke off: start again, skipping what was handed out, within the retry budget.
      failures = handedOut > before ? 0 : failures + 1;
      if (failures > this.transport.maxRetries) {
        throw new APIConnectionError(`The export kept breaking off after ${handedOut} messages.`, { cause: failure });
      }
      await sleep(backoffSeconds(Math.max(failures - 1, 0), response.headers), signal);
    }
  }

  /** Merge metadata (RFC 7396: nested objects merge, `null` removes a key). */
  updateMetadata(metadata: Metadata, options: UpdateMetadataOptions = {}): Promise<Context> {
    return callOperation(this.transport, 'patchMetadata', {
      contextId: this.id,
      body: { metadata, if_version: options.ifVersion } satisfies AllFields<Schemas['MetadataPatch']>,
      signal: options.signal,
    });
  }

  /**
   * Tombstone the context: reads keep working, writes get `ConflictError` (409 `context_tombstoned`).
   * With `{ purge: true }` (an `admin` key) erase it as well: `status` becomes `purged`.
   */
  delete(options: DeleteOptions = {}): Promise<Context> {
    return callOperation(this.transport, 'deleteContext', {
      contextId: this.id,
      query: deleteQuery(options),
      signal: options.signal,
    });
  }

  /**
   * Erase message `seq`'s content (an `admin` key): its parts become
   * `[{ type: 'redacted' }]`; its seq, id, role, metadata and place stay.
   * Redacting it again changes nothing.
   */
  redact(seq: number, options: RequestOptions = {}): Promise<Context> {
    return callOperation(this.transport, 'redactMessage', { contextId: this.id, seq, signal: options.signal });
  }

  /**
   * Feed the window to a model and keep its answer:
   *
   * ```ts
   * const stream = ctx.stream((messages) => streamText({ model, messages }));
   * return stream.toResponse();
   * ```
   *
   * Returns at once. In the background it reads the window, converts it to
   * ai-sdk model messages, calls `callback(messages, { uiMessages, window })`
   * (which returns a `streamText` result), streams the answer to whoever reads
   * `toResponse()` / `toUIMessageStream()`, and appends the finished assistant
   * message (all its parts) exactly once. See `ContextStream`.
   */
  stream(callback: StreamCallback, options: ContextStreamOptions = {}): ContextStream {
    return new ContextStream(this, callback, options);
  }

  /**
   * The context's events as Server-Sent Events (`GET …/events`): every event
   * after `cursor` (all by default), then live ones as they happen. Events
   * come a version at a time (a batch append's `message` events, a
   * `compaction_record` when the window was compacted, then its `context`
   * event). When the feed drops, or the server ends it (a slow
   * consumer, a shutdown), it reconnects after the last whole version, so
   * nothing is missed or repeated; it gives up after `maxRetries`
   * reconnections in a row without a new version. It ends after
   * `tombstoned`; stop it earlier with `break` or `signal`.
   */
  async *events(options: EventsOptions = {}): AsyncGenerator<ContextEvent> {
    const { signal } = options;
    let cursor = options.cursor === undefined ? undefined : String(options.cursor);
    const query: AllFields<QueryOf<'subscribeEvents'>> = {
      cursor: undefined,
      include_messages: options.includeMessages === false ? false : undefined,
    };
    let failures = 0;
    for (;;) {
      const response = await this.transport.open({
        method: 'GET',
        path: ROUTES.subscribeEvents.path.replace(/^\/v1/, '').replace('{context_id}', encodeURIComponent(this.id)),
        query: { cursor, include_messages: query.include_messages === false ? 'false' : undefined },
        headers: { accept: 'text/event-stream' },
        signal,
      });
      let failure: unknown;
      let progressed = false;
      let pending: ContextEvent[] = [];
      try {
        if (response.body === null) {
          throw new APIConnectionError('The event feed answered without a body.');
        }
        for await (const message of readServerSentEvents(response.body, signal)) {
          if (message.event === 'error') {
            failure = new APIConnectionError(`The server ended the event feed: ${message.data}`);
            continue; // the server closes the feed next; resume after the last whole version
          }
          const data = JSON.parse(message.data) as LiveEvent;
          pending.push({ type: data.type, cursor: undefined, data });
          if (!closesAVersion(data)) {
            continue;
          }
          // The version is whole: hand it out, and resume after it from now on.
          const ready = pending;
          const before = cursor;
          pending = [];
          cursor = String(data.version);
          progressed = true;
          for (const event of ready) {
            yield { ...event, cursor: event.data === data ? cursor : before };
          }
          if (data.type === 'tombstoned') {
            return;
          }
        }
      } catch (error) {
        failure = error;
      }
      if (signal?.aborted) {
        throw new APIUserAbortError();
      }
      // The feed closed or broke: reconnect after the last whole version, within the retry budget.
      failures = progressed ? 1 : failures + 1;
      if (failures > this.transport.maxRetries) {
        throw new APIConnectionError('The event feed kept closing.', { cause: failure });
      }
      await sleep(backoffSeconds(failures - 1, response.headers), signal);
    }
  }
}

/**
 * Whether an event type ends its version (the cursor moves to it). Every type
 * of the spec is listed, so a new one fails the build here; a type a newer
 * server sends is held back with its version, as `message` events are.
 */
const CLOSES_A_VERSION: { readonly [Type in LiveEvent['type']]: boolean } = {
  message: false,
  compaction_record: false,
  context: true,
  compaction: true,
  tombstoned: true,
  gap: true,
};

/** The query of `DELETE /v1/contexts/{id}`: `purge=true` only when asked (String(true) is `true`). */
export function deleteQuery(options: DeleteOptions): AllFields<QueryOf<'deleteContext'>> {
  return { purge: options.purge === true ? true : undefined };
}

function closesAVersion(event: LiveEvent): boolean {
  return (CLOSES_A_VERSION as Readonly<Record<string, boolean | undefined>>)[event.type] === true;
}

/** One line of an export, as the message it is. */
function parseExportLine(line: string): LogMessage {
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch (error) {
    throw new FastpacaError(`An export line is not JSON: ${line.slice(0, 200)}`, { cause: error });
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new FastpacaError(`An export line is not a JSON object: ${line.slice(0, 200)}`);
  }
  return message as LogMessage;
}

/** The spec's `Message` fields of a message; anything else on it (`seq`, `created_at`, UI fields) stays behind. */
function toWireMessage(message: FastpacaMessage): AllFields<Schemas['Message']> {
  return {
    id: message.id,
    role: message.role,
    parts: message.parts as Schemas['Part'][],
    metadata: message.metadata as Metadata | null | undefined,
    token_count: message.token_count,
  };
}

function toWireReplacement(message: ReplacementMessage): AllFields<Schemas['ReplacementMessage']> {
  return { ...toWireMessage(message), seq: message.seq, created_at: message.created_at };
}
