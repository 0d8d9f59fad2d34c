/** Random ids for idempotency keys and streamed messages (Web Crypto, in Node 20+, browsers and edge runtimes). */

/** 32 random hex digits. */
export function randomHex(): string {
  return globalThis.crypto.randomUUID().replaceAll('-', '');
}

/** An idempotency key for one call, reused across its retries. */
export function newIdempotencyKey(): string {
  return `fastpaca_${randomHex()}`;
}

/** A message id in the server's own format, `msg_<32 hex>`. */
export function newMessageId(): string {
  return `msg_${randomHex()}`;
}
