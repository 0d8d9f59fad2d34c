// A context's live feed (GET …/events, Server-Sent Events) read with fetch, because
// EventSource cannot send the Authorization header. The stream is parsed here (event:,
// data:, id: lines; ":" comments are the server's heartbeats). After a dropped
// connection it reconnects with Last-Event-ID: the version of the last closing event it
// handled, so the server replays whatever was missed.

import { authorizedFetch, errorOf } from './api.js';

const RETRY_FIRST = 500; // ms; grows by half on every failed attempt
const RETRY_MAX = 10000;
const SILENCE_LIMIT = 75000; // ms without a byte (heartbeats come every 30 s): reconnect

export class Feed {
  /**
   * `path`: the events route; `cursor`: the version already read over REST.
   * `onEvent(type, data)` gets every event (`message`, `context`, `compaction`,
   * `compaction_record`, `tombstoned`, `gap`, `error`); `onStatus(state, detail)` gets
   * `connecting`, `live`, `reconnecting` or `ended`.
   */
  constructor(path, cursor, { onEvent, onStatus }) {
    this.path = path;
    this.lastEventId = String(cursor);
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.stopped = false;
    this.connection = null;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    this.connection?.abort();
  }

  async run() {
    let delay = RETRY_FIRST;
    let first = true;
    while (!this.stopped) {
      this.onStatus(first ? 'connecting' : 'reconnecting');
      first = false;
      let ended;
      try {
        ended = await this.connect();
      } catch (error) {
        if (this.stopped) return;
        ended = { retry: true, detail: error instanceof Error ? error.message : String(error) };
      }
      if (this.stopped) return;
      if (!ended.retry) {
        this.onStatus('ended', ended.detail);
        return;
      }
      if (ended.live) delay = RETRY_FIRST; // it worked for a while: retry soon
      this.onStatus('reconnecting', ended.detail);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 1.5, RETRY_MAX);
    }
  }

  /** One connection: resolves with `{retry, live, detail}` when it ends. */
  async connect() {
    const connection = new AbortController();
    this.connection = connection;
    const headers = { Accept: 'text/event-stream', 'Last-Event-ID': this.lastEventId };
    const response = await authorizedFetch(this.path, {
      headers,
      signal: connection.signal,
      cache: 'no-store',
    });
    if (!response.ok) {
      const error = await errorOf(response);
      // 503 (starting, too many streams): try again; 400/404: this feed cannot work.
      return { retry: response.status >= 500, detail: error.message };
    }
    this.onStatus('live');
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => connection.abort(), SILENCE_LIMIT);
    };
    watch();
    try {
      return await this.read(response.body.getReader(), watch);
    } catch (error) {
      if (this.stopped) throw error;
      return { retry: true, live: true, detail: 'connection lost' };
    } finally {
      clearTimeout(silence);
    }
  }

  async read(reader, heard) {
    const decoder = new TextDecoder();
    let buffer = '';
    let event = { type: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { retry: true, live: true, detail: 'the server closed the feed' };
      heard();
      buffer += decoder.decode(value, { stream: true });
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        if (match === null) break;
        if (match[0] === '\r' && match.index === buffer.length - 1) break; // maybe "\r\n" split
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          const ended = this.dispatch(event);
          event = { type: '', data: [], id: null };
          if (ended) {
            await reader.cancel().catch(() => {});
            return ended;
          }
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon === -1 ? line : line.slice(0, colon);
          let text = colon === -1 ? '' : line.slice(colon + 1);
          if (text.startsWith(' ')) text = text.slice(1);
          if (field === 'event') event.type = text;
          else if (field === 'data') event.data.push(text);
          else if (field === 'id') event.id = text;
        }
      }
    }
  }

  /** Hand one SSE message on; returns how the feed ends if this event ends it. */
  dispatch(event) {
    if (event.data.length === 0) return null;
    const type = event.type || 'message';
    let data;
    try {
      data = JSON.parse(event.data.join('\n'));
    } catch {
      return null; // not an event of this API
    }
    this.onEvent(type, data);
    if (event.id !== null) this.lastEventId = event.id; // only versions' closing events
    if (type === 'tombstoned') return { retry: false, detail: 'context tombstoned' };
    if (type === 'error') {
      // slow_consumer or shutting_down: every version up to data.version was sent whole.
      if (Number.isInteger(data.version)) this.lastEventId = String(data.version);
      return { retry: true, live: true, detail: data.reason ?? 'feed ended' };
    }
    return null;
  }
}
