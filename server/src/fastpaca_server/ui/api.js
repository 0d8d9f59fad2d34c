// The inspector's client of the /v1 API: JSON requests, errors in the API's shape, and the
// API key. A 401 asks the user for the key (setKeyPrompt), keeps it in this tab's
// sessionStorage and retries the request; every request in flight waits for the same key.

const KEY_STORAGE = 'fastpaca.inspector.apiKey';

/** A failed request: the HTTP status and the API's `error` code and `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

let prompt = () => Promise.reject(new ApiError(401, 'unauthorized', 'An API key is required.'));
let pendingKey = null;
const keyListeners = new Set();

/**
 * Set what asks the user for a key: `prompt(refused)` resolves with the key typed in;
 * `refused` is true when the key sent was refused (false when none was stored).
 */
export function setKeyPrompt(ask) {
  prompt = ask;
}

/** Call `listener(hasKey)` whenever the stored key changes. */
export function onKeyChange(listener) {
  keyListeners.add(listener);
}

export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage disabled: the key lives only as long as the prompt's answer
  }
}

function storeKey(key) {
  try {
    if (key === null) sessionStorage.removeItem(KEY_STORAGE);
    else sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    // nothing to do: without storage the user is asked again on the next 401
  }
  for (const listener of keyListeners) listener(key !== null);
}

export function forgetKey() {
  storeKey(null);
}

function askForKey(refused) {
  if (pendingKey === null) {
    pendingKey = prompt(refused).then(
      (key) => {
        pendingKey = null;
        storeKey(key);
        return key;
      },
      (error) => {
        pendingKey = null;
        throw error;
      },
    );
  }
  return pendingKey;
}

/**
 * `fetch` with `Authorization: Bearer <key>` when a key is stored. On a 401 it asks for a
 * key and tries again, until the server takes one: the answer is never a 401.
 */
export async function authorizedFetch(path, init = {}) {
  for (;;) {
    const sent = storedKey();
    const headers = new Headers(init.headers ?? {});
    if (sent !== null) headers.set('Authorization', `Bearer ${sent}`);
    const response = await fetch(path, { ...init, headers, credentials: 'omit' });
    if (response.status !== 401) return response;
    await response.body?.cancel();
    if (storedKey() !== sent) continue; // another request got a new key meanwhile
    await askForKey(sent !== null);
  }
}

/** The error of a failed response, from the API's `{"error", "message"}` body. */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const code = typeof body?.error === 'string' ? body.error : 'http_error';
  const message =
    typeof body?.message === 'string' ? body.message : `${response.status} ${response.statusText}`;
  return new ApiError(response.status, code, message);
}

/** A JSON request to the API; resolves with the parsed body, rejects with an ApiError. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await authorizedFetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** The path of a context's route: `contextPath('a:b', '/tail')` → `/v1/contexts/a%3Ab/tail`. */
export function contextPath(id, suffix = '') {
  return `/v1/contexts/${encodeURIComponent(id)}${suffix}`;
}
