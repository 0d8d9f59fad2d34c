/**
 * Every error this package throws is a `FastpacaError`:
 *
 * ```
 * FastpacaError
 * ├── APIConnectionError            the request never got an answer (network)
 * │   └── APITimeoutError           no answer within `timeoutMs`
 * ├── APIUserAbortError             the caller's `signal` aborted the request
 * ├── APIError                      the server answered with an error status
 * │   ├── BadRequestError           400  (invalid_request, unknown_field, …)
 * │   ├── AuthenticationError       401  unauthorized
 * │   ├── PermissionDeniedError     403  forbidden (scope, tenant namespace)
 * │   ├── NotFoundError             404  not_found
 * │   ├── ConflictError             409  version_conflict, context_tombstoned, …
 * │   ├── PayloadTooLargeError      413  body_too_large
 * │   ├── RateLimitError            429  rate_limited, quota_exceeded
 * │   ├── InternalServerError       500 and any other 5xx but 503
 * │   └── ServiceUnavailableError   503  unavailable, not_ready, archive_unavailable
 * └── StreamError                   ctx.stream: the model call failed (cause attached)
 * ```
 *
 * `APIError` carries `status`, the spec's error `code` (`version_conflict`, …),
 * the server's `message`, the parsed `body` and the response `headers`.
 * Status codes map to classes in one place: {@link APIError.fromResponse}.
 */

import type { ErrorCode } from './types.js';

/** The base class of every error thrown by `@fastpaca/fastpaca`. */
export class FastpacaError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The request did not get an answer: DNS, refused connection, reset, … */
export class APIConnectionError extends FastpacaError {
  constructor(message = 'Connection error.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The request got no complete answer within the client's `timeoutMs`. */
export class APITimeoutError extends APIConnectionError {
  constructor(message = 'Request timed out.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The caller aborted the request through its `signal`; it is not retried. */
export class APIUserAbortError extends FastpacaError {
  constructor(message = 'Request was aborted.', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The body of every error response (`spec/openapi.yaml`, schema `Error`). */
export interface ErrorBody {
  error: string;
  message: string;
}

/** The server answered with a non-2xx status. */
export class APIError extends FastpacaError {
  /** The HTTP status code. */
  readonly status: number;
  /** The spec's stable error code (`version_conflict`, `not_found`, …); `unknown` when the body had none. */
  readonly code: ErrorCode;
  /** The parsed JSON body, or the raw text when it was not JSON. */
  readonly body: unknown;
  /** The response headers. */
  readonly headers: Headers;

  constructor(status: number, body: unknown, headers: Headers, message?: string) {
    const parsed = readErrorBody(body);
    super(message ?? `${status} ${parsed.code}: ${parsed.message}`);
    this.status = status;
    this.code = parsed.code;
    this.body = body;
    this.headers = headers;
  }

  /** The class for a status code; the one place where statuses map to classes. */
  static fromResponse(status: number, body: unknown, headers: Headers): APIError {
    switch (status) {
      case 400:
        return new BadRequestError(status, body, headers);
      case 401:
        return new AuthenticationError(status, body, headers);
      case 403:
        return new PermissionDeniedError(status, body, headers);
      case 404:
        return new NotFoundError(status, body, headers);
      case 409:
        return new ConflictError(status, body, headers);
      case 413:
        return new PayloadTooLargeError(status, body, headers);
      case 429:
        return new RateLimitError(status, body, headers);
      case 503:
        return new ServiceUnavailableError(status, body, headers);
      default:
        return status >= 500
          ? new InternalServerError(status, body, headers)
          : new APIError(status, body, headers);
    }
  }
}

/** 400: the request is malformed or breaks a rule (budget, unknown field, …). */
export class BadRequestError extends APIError {}
/** 401: the server has an API key and the request's is missing or wrong. */
export class AuthenticationError extends APIError {}
/** 403 `forbidden`: the key lacks the route's scope, or the context is outside its tenant's namespace. Never retried. */
export class PermissionDeniedError extends APIError {}
/** 404: the context (or route) does not exist. */
export class NotFoundError extends APIError {}
/**
 * 409: the context is not in the state the request assumed
 * (`version_conflict`, `context_tombstoned`, `idempotency_key_reused`, …).
 * Never retried: re-read the state and decide.
 */
export class ConflictError extends APIError {}
/** 413: the body is larger than the server's `--max-body-bytes`. */
export class PayloadTooLargeError extends APIError {}
/**
 * 429 `rate_limited` (the tenant is over its request rate: retried after `Retry-After`)
 * or `quota_exceeded` (a write would pass one of the tenant's quotas: never retried,
 * nothing was written).
 */
export class RateLimitError extends APIError {}
/** 5xx other than 503: a server bug. */
export class InternalServerError extends APIError {}
/**
 * 503 `unavailable` (a write not confirmed), `not_ready` (the node is starting) or
 * `archive_unavailable` (a read that needs the server's archive while it is down):
 * retried with the same idempotency key, honouring `Retry-After`.
 */
export class ServiceUnavailableError extends APIError {}

/** `ctx.stream`: the window could not be read, the callback threw, or the model stream failed. */
export class StreamError extends FastpacaError {}

function readErrorBody(body: unknown): { code: ErrorCode; message: string } {
  if (typeof body === 'object' && body !== null) {
    const record = body as Record<string, unknown>;
    const code = typeof record['error'] === 'string' ? record['error'] : 'unknown';
    const message = typeof record['message'] === 'string' ? record['message'] : JSON.stringify(body);
    return { code, message };
  }
  return { code: 'unknown', message: typeof body === 'string' && body !== '' ? body : 'no body' };
}
