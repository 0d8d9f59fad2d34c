/**
 * Public types. Wire shapes are the spec's own (generated from
 * `spec/openapi.yaml` at build time); the message input types are written
 * here so that an ai-sdk `UIMessage` fits them without this module importing
 * ai-sdk.
 */

import type { FetchFunction } from './_transport.js';
import type { QueryOf, Schemas, SpecErrorCode } from './_wire.js';

// ---------------------------------------------------------------------------
// Wire shapes, as the spec defines them

/** A context: config, metadata, status, version and counts (`GET /v1/contexts/{id}`). */
export type Context = Schemas['Context'];
/** One page of `GET /v1/contexts`: `contexts`, `has_more`, `next_cursor` (pass it as `cursor` for the next page). */
export type ContextPage = Schemas['ContextPage'];
/** The server's view of its Raft cluster (`GET /v1/cluster`); a single node is a cluster of one. */
export type Cluster = Schemas['Cluster'];
/** The LLM window (`GET …/context`): `messages`, `version`, `used_tokens`, `needs_compaction`, `segments`. */
export type ContextWindow = Schemas['Window'];
/** The shape `ctx.context({ format })` asks for: `ui` (the messages as stored, the default), `openai` or `anthropic`. */
export type WindowFormat = NonNullable<QueryOf<'getWindow'>['format']>;
/**
 * The window as OpenAI Chat Completions messages (`ctx.context({ format: 'openai' })`):
 * `version`, `used_tokens`, `budget_tokens`, `needs_compaction` and `segments` as in
 * `ContextWindow` (they describe the stored messages), `messages` converted by the server.
 */
export type OpenAIContextWindow = Schemas['OpenAIWindow'];
/** One Chat Completions message of an `OpenAIContextWindow`. */
export type OpenAIMessage = Schemas['OpenAIMessage'];
/**
 * The window as Anthropic Messages API `system` (absent without system text) and
 * `messages` (`ctx.context({ format: 'anthropic' })`), with the envelope of `ContextWindow`.
 */
export type AnthropicContextWindow = Schemas['AnthropicWindow'];
/** One turn (`user` or `assistant`, content blocks) of an `AnthropicContextWindow`. */
export type AnthropicMessage = Schemas['AnthropicMessage'];
/** What `ctx.context()` can answer: the window in one of the `WindowFormat`s. */
export type AnyContextWindow = ContextWindow | OpenAIContextWindow | AnthropicContextWindow;
/** A run of the window: consecutive log messages (`log`), compaction replacements (`replacement`), or one summary standing for log messages `from_seq`…`to_seq` (`summary`). */
export type Segment = Schemas['Segment'];
/** A message as stored, in the log or in the window (`seq` is null for compaction replacements). */
export type StoredMessage = Schemas['StoredMessage'];
/** A message of the log (always has a `seq`). */
export type LogMessage = StoredMessage & { seq: number };
/** A page of the log, oldest first (`tail` and `messages`). */
export interface MessagePage {
  messages: LogMessage[];
  /** The `seq` of the newest message of the context. */
  last_seq: number;
  /** `tail`: older messages exist before the page; `messages`: more follow it in the range. */
  has_more: boolean;
}
/** The answer to an append: `seq` and `token_estimate` are there when exactly one message was stored. */
export type AppendResult = Schemas['AppendResult'];
/** The answer to `compact`. */
export type CompactResult = Schemas['CompactResult'];
/**
 * Why messages left the window (`ctx.compactions()`): `number`, `version`
 * (`first_version` … `version` when `runs` > 1), `at`, `cause` (`append`,
 * `config`, `compact`, `summary`), `policy`, `outcome` (`applied`, or `failed`
 * for a failed summary, with its `error`), `tokens_before`/`tokens_after` and
 * the `actions` of its steps.
 */
export type CompactionRecord = Schemas['CompactionRecord'];
/** What one policy step did: its `reason` and the seq ranges it `removed` from or `changed` in the window. */
export type CompactionAction = Schemas['CompactionAction'];
/** A page of compaction records, oldest first: `records`, `has_more`, and `compactions` (all of them so far). */
export type CompactionPage = Schemas['CompactionPage'];
/**
 * The window under another config (`ctx.preview()`): `config` (as run),
 * `messages`, `segments`, `used_tokens`, `needs_compaction`, each message's
 * tokens (`breakdown`), the runs of log messages it would not hold
 * (`dropped`), the seqs whose window copy would differ (`changed`) and the
 * messages the config could never hold (`refused`).
 */
export type Preview = Schemas['Preview'];
/**
 * A window policy to set, with its config: `last_n`, `skip_parts`, `budget`,
 * `time_window`, `strip_tool_results`, `pipeline` (`steps`), `summarize`
 * (needs a summarizer on the server), `manual`, or any other name for a
 * custom policy installed on the server (free `config`). Every top-level
 * config takes `pin` (`system`, the default, or `none`).
 */
export type Policy = Schemas['PolicyInput'];
/** A window policy as stored, every default filled in. */
export type StoredPolicy = Schemas['Policy'];
/** One step of a `pipeline` policy (`last_n`, `skip_parts`, `budget`, `time_window`, `strip_tool_results`). */
export type PolicyStep = Schemas['PolicyStepInput'];
/** The built-in strategies (`policy.strategy`); any other name is a custom policy. */
export type Strategy = BuiltInStrategy<Policy>;
/** `policy.config.pin`: `system` keeps system messages in the window, `none` lets the policy drop them. */
export type Pin = NonNullable<NonNullable<Extract<Policy, { strategy: 'manual' }>['config']>['pin']>;

type BuiltInStrategy<P> = P extends { strategy: infer S } ? (string extends S ? never : S) : never;
/** The tokenizers the server counts with. */
export type Tokenizer = Schemas['Tokenizer'];
/** Free JSON object (at most 64 KiB). */
export type Metadata = Schemas['Metadata'];

/**
 * An error code of the spec (`version_conflict`, `not_found`, …). Codes the
 * spec does not list (`internal_error`, `method_not_allowed`) and `unknown`
 * (no error body) are possible too.
 */
export type ErrorCode = SpecErrorCode | 'internal_error' | 'method_not_allowed' | 'unknown' | (string & {});

// ---------------------------------------------------------------------------
// Messages (ai-sdk `UIMessage`-shaped)

/**
 * One part of a message: a `type` and free fields, stored verbatim. Every
 * ai-sdk `UIMessagePart` fits (`text`, `reasoning`, `tool-<name>`,
 * `dynamic-tool`, `file`, `step-start`, …), and so do the server's
 * `tool_call` (`id`, `name`, `payload`) and `tool_result` (`tool_call_id`,
 * `payload`) parts.
 */
export type MessagePart = { type: string; [field: string]: unknown };

/** `system`, `user`, `assistant`, `tool` carry meaning; any other string is stored too. */
export type MessageRole = 'system' | 'user' | 'assistant' | 'tool' | (string & {});

/**
 * A message to append. An ai-sdk `UIMessage` (`id`, `role`, `parts`,
 * `metadata`) fits as it is.
 */
export interface FastpacaMessage {
  /** Kept as given; the server generates `msg_<32 hex>` when absent. */
  id?: string | null | undefined;
  role: MessageRole;
  /** 1 to 1,000 parts. */
  parts: readonly MessagePart[];
  /** A JSON object or null (typed `unknown` so that any `UIMessage<METADATA>` fits). `metadata.pinned: true` pins the message. */
  metadata?: unknown;
  /** Used verbatim as the message's token count; the server counts when absent. */
  token_count?: number | null | undefined;
}

/**
 * A message of a compaction's replacement: a new message, or a message
 * exactly as `ctx.context()` returned it (with its `seq`), which keeps that
 * log message.
 */
export interface ReplacementMessage extends FastpacaMessage {
  seq?: number | null | undefined;
  /** Read-only; ignored by the server. */
  created_at?: string | null | undefined;
}

/**
 * A window message in ai-sdk `UIMessage` shape (see `toUIMessages`): roles
 * `system`, `user`, `assistant`; server-style tool calls folded into
 * `dynamic-tool` parts.
 */
export interface FastpacaUIMessage {
  id: string;
  role: 'system' | 'user' | 'assistant';
  parts: MessagePart[];
  metadata?: Metadata;
}

// ---------------------------------------------------------------------------
// Options

/** `createClient` options. */
export interface ClientOptions {
  /**
   * Where the server is, with or without the `/v1` suffix
   * (`http://localhost:4000` and `http://localhost:4000/v1` are the same).
   * Default: `FASTPACA_URL` from the environment, else `http://localhost:4000/v1`.
   */
  baseUrl?: string | undefined;
  /** Sent as `Authorization: Bearer <apiKey>`. Default: `FASTPACA_API_KEY` from the environment. */
  apiKey?: string | undefined;
  /** The fetch to use (default: the global `fetch`). Tests inject one. */
  fetch?: FetchFunction | undefined;
  /** Retries after the first try (network errors, timeouts, 408, 429, 5xx; never 409). Default 2. */
  maxRetries?: number | undefined;
  /** Per try, until the whole answer is read. Default 60,000 ms. */
  timeoutMs?: number | undefined;
  /** Extra headers sent with every request. */
  defaultHeaders?: Record<string, string> | undefined;
}

/** `client.context(id, options)`: any option given makes it create or update the context (PUT). */
export interface ContextOptions {
  /** `token_budget`: the window's budget in tokens (required to create a context). */
  budget?: number | undefined;
  /** `trigger_ratio`: the policy runs above `trigger × budget` tokens (default 0.7). */
  trigger?: number | undefined;
  /** The window policy (default `{ strategy: 'last_n' }`). */
  policy?: Policy | undefined;
  /** Replaces the context's metadata when given. */
  metadata?: Metadata | undefined;
  /** Default `o200k_base`; cannot change once the context has messages. */
  tokenizer?: Tokenizer | undefined;
}

/** Options every call takes. */
export interface RequestOptions {
  /** Aborts the request (and its retries). */
  signal?: AbortSignal | undefined;
}

/** Filters of `client.listContexts` / `client.iterContexts`. */
export interface ListContextsFilters extends RequestOptions {
  /** `id` (default: every context listed once while paging) or `recent` (newest activity first). */
  order?: QueryOf<'listContexts'>['order'];
  /** Only ids that start with this. */
  prefix?: string;
  /** Case-insensitive search in the id and the top-level string metadata values. */
  q?: string;
  /** Top-level metadata keys and the values they must have (a non-string value matches by its JSON). */
  metadata?: Record<string, unknown>;
  /** `active` (default), `tombstoned`, `purged` or `all`. */
  status?: QueryOf<'listContexts'>['status'];
}

/** Options of `client.listContexts`: the filters, the page size and the previous page's cursor. */
export interface ListContextsOptions extends ListContextsFilters {
  /** Contexts per page (1-1000, server default 50). */
  limit?: number;
  /** The previous page's `next_cursor`. */
  cursor?: string;
}

export interface AppendOptions extends RequestOptions {
  /** 409 `version_conflict` unless the context is at this version; nothing is stored then. */
  ifVersion?: number | undefined;
  /** Used verbatim as the message's token count. */
  tokenCount?: number | undefined;
  /** Default: a new key per call, reused across that call's retries. */
  idempotencyKey?: string | undefined;
}

export interface AppendManyOptions extends RequestOptions {
  ifVersion?: number | undefined;
  /** Default: a new key per call, reused across that call's retries. */
  idempotencyKey?: string | undefined;
}

export interface WindowOptions extends RequestOptions {
  /** Trim a copy of the window to this many tokens, for this answer only. */
  budgetTokens?: number | undefined;
  /** 409 `version_conflict` unless the context is at this version. */
  ifVersion?: number | undefined;
}

/** `ctx.context(options)` with a `format`: the answer's type follows it. */
export interface FormattedWindowOptions<Format extends WindowFormat = WindowFormat> extends WindowOptions {
  /** `ui` (the default): the messages as stored; `openai` / `anthropic`: converted by the server. */
  format: Format;
}

export interface CompactOptions extends RequestOptions {
  ifVersion?: number | undefined;
  /** Default: a new key per call, reused across that call's retries. */
  idempotencyKey?: string | undefined;
}

export interface TailOptions extends RequestOptions {
  /** Skip this many of the newest messages (default 0). */
  offset?: number | undefined;
  /** Page size, 1–1,000 (default 100). */
  limit?: number | undefined;
}

export interface MessagesOptions extends RequestOptions {
  /** Only `seq > afterSeq` (default 0). */
  afterSeq?: number | undefined;
  /** Only `seq < beforeSeq`. */
  beforeSeq?: number | undefined;
  /** Page size, 1–1,000 (default 50). */
  limit?: number | undefined;
}

export interface CompactionsOptions extends RequestOptions {
  /** Only records numbered above this (default 0): the last `number` you have. */
  after?: number | undefined;
  /** Page size, 1–1,000 (default 50). */
  limit?: number | undefined;
}

/** `ctx.preview(options)`: any config field of a PUT; what is left out is the context's own. */
export interface PreviewOptions extends RequestOptions {
  /** `token_budget`. */
  tokenBudget?: number | undefined;
  /** `trigger_ratio`. */
  triggerRatio?: number | undefined;
  policy?: Policy | undefined;
  tokenizer?: Tokenizer | undefined;
}

export interface DeleteOptions extends RequestOptions {
  /**
   * Erase the context as well (a key with the `admin` scope): its messages,
   * window and metadata are gone, from the server's disk and archive too; the
   * id stays taken (`status: 'purged'`).
   */
  purge?: boolean | undefined;
}

export interface UpdateMetadataOptions extends RequestOptions {
  ifVersion?: number | undefined;
}

export interface EventsOptions extends RequestOptions {
  /** Replay from after this version (an event's `cursor`), then follow live. Default: everything. */
  cursor?: string | number | undefined;
  /** `false`: `message` events carry their `seq` but not the message (default `true`). */
  includeMessages?: boolean | undefined;
}

/**
 * One event of a context's live feed, as the spec defines it: `message`
 * (`seq`, `message`), `compaction_record` (`record`: the window was
 * compacted, or a summary failed; it comes before the version's closing
 * event), `context` (`cause`, `last_seq`, `used_tokens`,
 * `needs_compaction`), `compaction` (`segments`), `tombstoned` or `gap`
 * (`expected`, `actual`: older versions are no longer kept; re-read them).
 */
export type LiveEvent = Schemas['Event'];

/** One event of `ctx.events()`. */
export interface ContextEvent {
  /** The event's `type`: `message`, `compaction_record`, `context`, `compaction`, `tombstoned` or `gap`. */
  type: LiveEvent['type'];
  /**
   * Pass it as `cursor` to resume after this event: its own version for the
   * event that ends a version, the version before for a `message` or a
   * `compaction_record` (a version is sent again whole, never from its middle).
   */
  cursor: string | undefined;
  /** The event. */
  data: LiveEvent;
}
