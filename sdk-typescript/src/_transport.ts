/**
 * HTTP with retries, in the manner of openai-python: exponential backoff from
 * 0.5 s to 8 s with jitter, `Retry-After` honoured, a small retry count. Retried:
 * network failures, timeouts, 408, 429 and 5xx (a 503 whatever its code:
 * `unavailable`, `not_ready`, `archive_unavailable`). Never retried: 409 (a version
 * conflict is a fact about the state, not a transient failure) and other 4xx.
 * Writes are safe to retry because the client puts one idempotency key in the
 * body of each append and compaction, and the same body goes out on every try.
 */

import {
  APIConnectionError,
  APIError,
  APITimeoutError,
  APIUserAbortError,
} from './errors.js';

export type FetchFunction = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface TransportOptions {
  baseUrl: string;
  apiKey: string | undefined;
  fetch: FetchFunction;
  maxRetries: number;
  timeoutMs: number;
  defaultHeaders: Record<string, string>;
}

export interface TransportRequest {
  method: string;
  /** Relative to the `/v1` base URL, e.g. `/contexts/chat_42/tail`. */
  path: string;
  query?: Record<string, number | string | null | undefined> | undefined;
  body?: unknown;
  signal?: AbortSignal | undefined;
  headers?: Record<string, string>;
}

const INITIAL_RETRY_DELAY_SECONDS = 0.5;
const MAX_RETRY_DELAY_SECONDS = 8;
const MAX_RETRY_AFTER_SECONDS = 60;

export class Transport {
  readonly baseUrl: string;
  readonly maxRetries: number;
  readonly timeoutMs: number;
  private readonly options: TransportOptions;

  constructor(options: TransportOptions) {
    this.options = options;
    this.baseUrl = options.baseUrl;
    this.maxRetries = options.maxRetries;
    this.timeoutMs = options.timeoutMs;
  }

  /** Send a JSON request (retrying as above) and resolve with the parsed JSON answer. */
  async request<T>(request: TransportRequest): Promise<T> {
    return this.withRetries(request, async (response, timeout) => {
      const text = await readText(response, timeout, request.signal);
      return (text === '' ? undefined : JSON.parse(text)) as T;
    });
  }

  /**
   * Send a request (retrying as above) and resolve with the successful
   * response whose body has not been read yet, e.g. a Server-Sent Events feed.
   * The timeout covers the wait for the headers only.
   */
  async open(request: TransportRequest): Promise<Response> {
    return this.withRetries(request, async (response) => response);
  }

  private async withRetries<T>(
    request: TransportRequest,
    onSuccess: (response: Response, timeout: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const url = this.url(request);
    const init = this.init(request);
    for (let attempt = 0; ; attempt += 1) {
      const retriesLeft = this.maxRetries - attempt;
      const timeout = new TimeoutController(this.timeoutMs, request.signal);
      let response: Response;
      try {
        // Raced against the signal too, so that an injected fetch that ignores it still times out.
        response = await raceAbort(this.options.fetch(url, { ...init, signal: timeout.signal }), timeout.signal);
      } catch (error) {
        timeout.clear();
        const failure = connectionFailure(error, timeout, request.signal);
        if (retriesLeft > 0 && !(failure instanceof APIUserAbortError)) {
          await sleep(backoffSeconds(attempt, undefined), request.signal);
          continue;
        }
        throw failure;
      }
      if (response.ok) {
        try {
          return await onSuccess(response, timeout.signal);
        } catch (error) {
          if (error instanceof SyntaxError) {
            throw new APIConnectionError(`The server's answer to ${request.method} ${request.path} is not JSON.`, {
              cause: error,
            });
          }
          const failure = connectionFailure(error, timeout, request.signal);
          if (retriesLeft > 0 && !(failure instanceof APIUserAbortError)) {
            await sleep(backoffSeconds(attempt, undefined), request.signal);
            continue;
          }
          throw failure;
        } finally {
          timeout.clear();
        }
      }
      let body: unknown;
      try {
        const text = await readText(response, timeout.signal, request.signal);
        body = parseJsonOrText(text);
      } catch (error) {
        body = undefined;
        if (request.signal?.aborted) {
          throw new APIUserAbortError(undefined, { cause: error });
        }
      } finally {
        timeout.clear();
      }
      if (retriesLeft > 0 && isRetryableStatus(response.status) && !isQuotaExceeded(body)) {
        await sleep(backoffSeconds(attempt, response.headers), request.signal);
        continue;
      }
      throw APIError.fromResponse(response.status, body, response.headers);
    }
  }

  private url(request: TransportRequest): string {
    const url = new URL(this.baseUrl + request.path);
    for (const [name, value] of Object.entries(request.query ?? {})) {
      if (value !== undefined && value !== null) {
        url.searchParams.set(name, String(value));
      }
    }
    return url.toString();
  }

  private init(request: TransportRequest): RequestInit {
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...this.options.defaultHeaders,
      ...request.headers,
    };
    if (this.options.apiKey !== undefined) {
      headers['authorization'] = `Bearer ${this.options.apiKey}`;
    }
    const init: RequestInit = { method: request.method, headers };
    if (request.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(request.body);
    }
    return init;
  }
}

function isRetryableStatus(status: number): boolean {
  // 409 is deliberately absent: it means the state is not what the caller assumed.
  return status === 408 || status === 429 || status >= 500;
}

/** A 429 `quota_exceeded`: a quota does not free up by waiting, so it is not retried. */
function isQuotaExceeded(body: unknown): boolean {
  return typeof body === 'object' && body !== null && (body as { error?: unknown }).error === 'quota_exceeded';
}

/** The wait before retry number `attempt + 1`, in seconds. */
export function backoffSeconds(attempt: number, headers: Headers | undefined): number {
  const retryAfter = headers ? retryAfterSeconds(headers) : undefined;
  if (retryAfter !== undefined && retryAfter >= 0 && retryAfter <= MAX_RETRY_AFTER_SECONDS) {
    return retryAfter;
  }
  const delay = Math.min(INITIAL_RETRY_DELAY_SECONDS * 2 ** attempt, MAX_RETRY_DELAY_SECONDS);
  return delay * (1 - 0.25 * Math.random());
}

function retryAfterSeconds(headers: Headers): number | undefined {
  const value = headers.get('retry-after');
  if (value === null || value.trim() === '') {
    return undefined;
  }
  const seconds = Number(value);
  if (Number.isFinite(seconds)) {
    return seconds;
  }
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : (date - Date.now()) / 1000;
}

/** One try's deadline, tied to the caller's signal. */
class TimeoutController {
  private readonly controller = new AbortController();
  private readonly timer: ReturnType<typeof setTimeout>;
  private readonly onCallerAbort: () => void;
  timedOut = false;

  constructor(
    timeoutMs: number,
    private readonly callerSignal: AbortSignal | undefined,
  ) {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort(new APITimeoutError());
    }, timeoutMs);
    this.onCallerAbort = () => this.controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) {
      this.controller.abort(callerSignal.reason);
    } else {
      callerSignal?.addEventListener('abort', this.onCallerAbort, { once: true });
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  clear(): void {
    clearTimeout(this.timer);
    this.callerSignal?.removeEventListener('abort', this.onCallerAbort);
  }
}

function connectionFailure(
  error: unknown,
  timeout: TimeoutController,
  callerSignal: AbortSignal | undefined,
): APIConnectionError | APIUserAbortError {
  if (callerSignal?.aborted) {
    return new APIUserAbortError(undefined, { cause: error });
  }
  if (timeout.timedOut) {
    return new APITimeoutError(undefined, { cause: error });
  }
  if (error instanceof APIConnectionError) {
    return error;
  }
  const detail = error instanceof Error ? `: ${error.message}` : '';
  return new APIConnectionError(`Connection error${detail}`, { cause: error });
}

async function readText(
  response: Response,
  timeout: AbortSignal,
  callerSignal: AbortSignal | undefined,
): Promise<string> {
  if (timeout.aborted || callerSignal?.aborted) {
    throw timeout.reason ?? callerSignal?.reason;
  }
  return response.text();
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function parseJsonOrText(text: string): unknown {
  if (text === '') {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Wait `seconds`; rejects with `APIUserAbortError` when `signal` aborts. */
export function sleep(seconds: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new APIUserAbortError());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new APIUserAbortError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, seconds * 1000);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
