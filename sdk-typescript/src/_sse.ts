/** A Server-Sent Events parser (the WHATWG event-stream format) over a byte stream. */

export interface ServerSentEvent {
  /** `event:` (undefined when the server sent none). */
  event: string | undefined;
  /** `data:` lines joined with `\n`. */
  data: string;
  /** `id:` of this event, or the last one seen before it. */
  id: string | undefined;
}

/**
 * Yield each event of `body`; comments and events without data are skipped.
 * Aborting `signal` cancels the body, and the generator ends.
 */
export async function* readServerSentEvents(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<ServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => undefined);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let buffer = '';
  let event: string | undefined;
  let data: string[] = [];
  let lastId: string | undefined;
  let firstLine = true;
  try {
    for (;;) {
      if (signal?.aborted) {
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        // A lone '\r' at the end of the buffer may be the start of '\r\n': wait for more.
        if (match === null || (match[0] === '\r' && match.index === buffer.length - 1)) {
          break;
        }
        let line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (firstLine) {
          line = line.replace(/^\uFEFF/, '');
          firstLine = false;
        }
        if (line === '') {
          if (data.length > 0) {
            yield { event, data: data.join('\n'), id: lastId };
          }
          event = undefined;
          data = [];
          continue;
        }
        if (line.startsWith(':')) {
          continue;
        }
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) {
          value = value.slice(1);
        }
        if (field === 'event') {
          event = value;
        } else if (field === 'data') {
          data.push(value);
        } else if (field === 'id' && !value.includes('\0')) {
          lastId = value;
        }
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await reader.cancel().catch(() => undefined);
  }
}
