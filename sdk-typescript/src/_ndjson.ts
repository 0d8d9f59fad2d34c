/** A JSON Lines (NDJSON) reader over a byte stream: `GET …/export`. */

/**
 * Yield each non-empty line of `body` (without its `\n` or `\r\n`), decoded as
 * UTF-8. Only `\n` ends a line (a JSON text has no raw line break inside, while
 * U+2028 may sit in a string). Aborting `signal` cancels the body, and the
 * generator ends.
 */
export async function* readLines(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => undefined);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let buffer = '';
  try {
    for (;;) {
      if (signal?.aborted) {
        return;
      }
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      for (let end = buffer.indexOf('\n'); end !== -1; end = buffer.indexOf('\n', start)) {
        const line = withoutCarriageReturn(buffer.slice(start, end));
        start = end + 1;
        if (line.trim() !== '') {
          yield line;
        }
      }
      buffer = buffer.slice(start);
      if (done) {
        const rest = withoutCarriageReturn(buffer);
        if (rest.trim() !== '') {
          yield rest;
        }
        return;
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await reader.cancel().catch(() => undefined);
  }
}

function withoutCarriageReturn(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
