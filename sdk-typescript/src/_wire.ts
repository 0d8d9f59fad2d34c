/**
 * The wire contract, typed from `spec/openapi.yaml`.
 *
 * `npm run build` regenerates `_generated/openapi.ts` from the spec
 * (openapi-typescript) before compiling, and everything the client sends or
 * reads goes through the types here, so the build fails when the spec and the
 * client disagree:
 *
 * - every `/v1` operation of the spec must have an entry in `ROUTES` (a new
 *   route without an SDK method fails), and each entry must name the path and
 *   method where the spec has that operation;
 * - query strings and bodies are written as `AllFields<…>` of the spec's
 *   types, so a field the spec adds, renames or drops fails at the call site;
 * - answers are typed as the spec's response schemas.
 */

import type { components, operations, paths } from './_generated/openapi.js';
import type { Transport } from './_transport.js';

export type Schemas = components['schemas'];

export type HttpMethod = 'get' | 'put' | 'post' | 'patch' | 'delete';

/** Operations that are not part of the client: health, metrics and the websocket feed (`events()` reads the SSE one). */
type OperationsOutsideTheClient =
  | 'healthLive'
  | 'healthReady'
  | 'getMetrics'
  | 'streamEvents'
  | 'addClusterMember' // operator actions: docs/cluster.md's runbook, not app code
  | 'removeClusterMember';

/** Every operation the client calls: all of the spec's but health and metrics. */
export type ClientOperation = Exclude<keyof operations, OperationsOutsideTheClient>;

type Defined<T> = Exclude<T, undefined>;

/** The `{ method, path }` pairs of the spec where `operations[O]` lives. */
type RouteOf<O extends keyof operations> = {
  [P in keyof paths]: {
    [M in HttpMethod]: [Defined<paths[P][M]>] extends [never]
      ? never
      : [Defined<paths[P][M]>] extends [operations[O]]
        ? [operations[O]] extends [Defined<paths[P][M]>]
          ? { readonly method: M; readonly path: P }
          : never
        : never;
  }[HttpMethod];
}[keyof paths];

/**
 * Where each operation lives. Checked against the spec: a missing operation,
 * an unknown path or a wrong method is a compile error.
 */
export const ROUTES: { readonly [O in ClientOperation]: RouteOf<O> } = {
  listContexts: { method: 'get', path: '/v1/contexts' },
  putContext: { method: 'put', path: '/v1/contexts/{context_id}' },
  getContext: { method: 'get', path: '/v1/contexts/{context_id}' },
  deleteContext: { method: 'delete', path: '/v1/contexts/{context_id}' },
  patchMetadata: { method: 'patch', path: '/v1/contexts/{context_id}/metadata' },
  appendMessages: { method: 'post', path: '/v1/contexts/{context_id}/messages' },
  listMessages: { method: 'get', path: '/v1/contexts/{context_id}/messages' },
  exportContext: { method: 'get', path: '/v1/contexts/{context_id}/export' },
  redactMessage: { method: 'post', path: '/v1/contexts/{context_id}/messages/{seq}/redact' },
  tailMessages: { method: 'get', path: '/v1/contexts/{context_id}/tail' },
  getWindow: { method: 'get', path: '/v1/contexts/{context_id}/context' },
  compactWindow: { method: 'post', path: '/v1/contexts/{context_id}/compact' },
  listCompactions: { method: 'get', path: '/v1/contexts/{context_id}/compactions' },
  previewWindow: { method: 'post', path: '/v1/contexts/{context_id}/preview' },
  subscribeEvents: { method: 'get', path: '/v1/contexts/{context_id}/events' },
  getCluster: { method: 'get', path: '/v1/cluster' },
};

/**
 * Every field of `T` written out, optional ones possibly as `undefined`
 * (left out of the JSON): a field the spec adds is a compile error. (Mapping
 * over `Extract<keyof T, string>` rather than `keyof T` makes every key
 * required while keeping `undefined` in the optional ones' types.)
 */
export type AllFields<T> = { [K in Extract<keyof T, string>]: T[K] };

export type QueryOf<O extends ClientOperation> = operations[O]['parameters'] extends {
  query?: infer Query;
}
  ? Defined<Query>
  : never;

export type BodyOf<O extends ClientOperation> = operations[O] extends {
  requestBody: { content: { 'application/json': infer Body } };
}
  ? Body
  : never;

type SuccessOf<Responses> = 200 extends keyof Responses
  ? Responses[200]
  : 201 extends keyof Responses
    ? Responses[201]
    : never;

export type ResultOf<O extends ClientOperation> =
  SuccessOf<operations[O]['responses']> extends { content: { 'application/json': infer Result } }
    ? Result
    : never;

type ErrorResponseOf<Responses> = {
  [Status in keyof Responses]: Status extends 200 | 201 ? never : Responses[Status];
}[keyof Responses];

type ErrorCodeOf<Response> = Response extends { content: { 'application/json': infer Body } }
  ? Body extends { error: unknown }
    ? Defined<Body['error']>
    : never
  : never;

/** Every error code the spec names in a response of any operation. */
export type SpecErrorCode = {
  [O in keyof operations]: ErrorCodeOf<ErrorResponseOf<operations[O]['responses']>>;
}[keyof operations];

export interface CallOptions<O extends ClientOperation> {
  /** The context the path names (routes without one ignore it). */
  contextId?: string;
  /** The message the path names (`{seq}`; routes without one ignore it). */
  seq?: number;
  query?: QueryOf<O>;
  body?: BodyOf<O>;
  signal?: AbortSignal | undefined;
}

/** Call one operation of the spec with its typed query and body; resolve with its typed answer. */
export function callOperation<O extends ClientOperation>(
  transport: Transport,
  operation: O,
  options: CallOptions<O>,
): Promise<ResultOf<O>> {
  const route: { method: HttpMethod; path: string } = ROUTES[operation];
  const path = route.path
    .replace(/^\/v1/, '')
    .replace('{context_id}', encodeURIComponent(options.contextId ?? ''))
    .replace('{seq}', String(options.seq ?? ''));
  return transport.request<ResultOf<O>>({
    method: route.method.toUpperCase(),
    path,
    query: options.query as Record<string, number | string | null | undefined> | undefined,
    body: options.body,
    signal: options.signal,
  });
}
