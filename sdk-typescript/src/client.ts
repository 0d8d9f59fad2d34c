import { deleteQuery, FastpacaContext } from './context.js';
import { Transport, type FetchFunction } from './_transport.js';
import { type AllFields, callOperation, type QueryOf, type Schemas } from './_wire.js';
import type {
  ClientOptions,
  Cluster,
  Context,
  ContextOptions,
  ContextPage,
  DeleteOptions,
  ListContextsFilters,
  ListContextsOptions,
  RequestOptions,
} from './types.js';

const DEFAULT_BASE_URL = 'http://localhost:4000/v1';
const DEFAULT_MAX_RETRIES = 2;
const DEFAULT_TIMEOUT_MS = 60_000;

/** A Fastpaca server: open contexts on it, delete them. Create one with `createClient`. */
export class FastpacaClient {
  /** The `/v1` base URL every request goes to. */
  readonly baseUrl: string;
  private readonly transport: Transport;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = normaliseBaseUrl(options.baseUrl ?? environment('FASTPACA_URL') ?? DEFAULT_BASE_URL);
    const fetchFunction: FetchFunction | undefined = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (fetchFunction === undefined) {
      throw new TypeError('No fetch: pass createClient({ fetch }) on runtimes without a global fetch.');
    }
    this.transport = new Transport({
      baseUrl: this.baseUrl,
      apiKey: options.apiKey ?? environment('FASTPACA_API_KEY'),
      fetch: fetchFunction,
      maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      defaultHeaders: options.defaultHeaders ?? {},
    });
  }

  /**
   * The context `id`. With options (any of `budget`, `trigger`, `policy`,
   * `metadata`, `tokenizer`) it is created, or its config replaced as a whole
   * (`PUT`, idempotent: an unchanged config changes nothing); without, no
   * request is sent.
   */
  async context(id: string, options?: ContextOptions & RequestOptions): Promise<FastpacaContext> {
    const context = new FastpacaContext(this.transport, id);
    if (options !== undefined && hasContextOptions(options)) {
      await this.putContext(id, options);
    }
    return context;
  }

  /** Create a context or replace its config, and answer the context as it is now. */
  putContext(id: string, options: ContextOptions & RequestOptions): Promise<Context> {
    return callOperation(this.transport, 'putContext', {
      contextId: id,
      body: {
        // Left out when not given, as the original SDK does: the server answers 400 naming the field.
        token_budget: options.budget as number,
        trigger_ratio: options.trigger,
        policy: options.policy,
        tokenizer: options.tokenizer,
        metadata: options.metadata,
      } satisfies AllFields<Schemas['ContextPut']>,
      signal: options.signal,
    });
  }

  /**
   * One page of contexts (`GET /v1/contexts`), filtered, in id order or newest
   * activity first. Pass `next_cursor` back as `cursor` for the next page.
   */
  listContexts(options: ListContextsOptions = {}): Promise<ContextPage> {
    const query: AllFields<QueryOf<'listContexts'>> = {
      limit: options.limit,
      cursor: options.cursor,
      order: options.order,
      prefix: options.prefix,
      q: options.q,
      status: options.status,
    };
    // Metadata filters are `metadata.<key>=<value>`: a string as is, anything else as JSON.
    const filters = Object.fromEntries(
      Object.entries(options.metadata ?? {}).map(([key, value]) => [
        `metadata.${key}`,
        typeof value === 'string' ? value : JSON.stringify(value),
      ]),
    );
    return callOperation(this.transport, 'listContexts', {
      query: { ...query, ...filters },
      signal: options.signal,
    });
  }

  /** Every context that matches, page by page (see `listContexts`). */
  async *iterContexts(options: ListContextsFilters & { pageSize?: number } = {}): AsyncGenerator<Context> {
    const { pageSize, ...filters } = options;
    let cursor: string | undefined;
    for (;;) {
      const page = await this.listContexts({ ...filters, limit: pageSize, cursor });
      yield* page.contexts;
      if (!page.has_more || page.next_cursor === null) return;
      cursor = page.next_cursor;
    }
  }

  /** The server's view of its cluster: node id, leader, members, indexes (`GET /v1/cluster`). */
  cluster(options: RequestOptions = {}): Promise<Cluster> {
    return callOperation(this.transport, 'getCluster', { signal: options.signal });
  }

  /**
   * Tombstone a context: its history stays readable, writes get 409 `context_tombstoned`.
   * With `{ purge: true }` (an `admin` key) erase it as well (`status: 'purged'`).
   */
  deleteContext(id: string, options: DeleteOptions = {}): Promise<Context> {
    return callOperation(this.transport, 'deleteContext', {
      contextId: id,
      query: deleteQuery(options),
      signal: options.signal,
    });
  }
}

/**
 * A client for a Fastpaca server.
 *
 * ```ts
 * const fastpaca = createClient({ baseUrl: 'http://localhost:4000/v1' });
 * const ctx = await fastpaca.context('chat_42', { budget: 8000 });
 * ```
 */
export function createClient(options: ClientOptions = {}): FastpacaClient {
  return new FastpacaClient(options);
}

const CONTEXT_OPTION_NAMES = ['budget', 'trigger', 'policy', 'metadata', 'tokenizer'] as const satisfies readonly (keyof ContextOptions)[];

function hasContextOptions(options: ContextOptions): boolean {
  return CONTEXT_OPTION_NAMES.some((name) => options[name] !== undefined);
}

/** Trailing slashes off; `/v1` on when it is not there yet. */
function normaliseBaseUrl(baseUrl: string): string {
  const trimmed = baseUrl.replace(/\/+$/, '');
  return trimmed.endsWith('/v1') ? trimmed : `${trimmed}/v1`;
}

function environment(name: string): string | undefined {
  const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const value = process?.env?.[name];
  return value === undefined || value === '' ? undefined : value;
}
