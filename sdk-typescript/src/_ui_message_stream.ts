/**
 * ai-sdk's UI message stream protocol (v1) on the wire, written out so that
 * `toResponse()` can answer before ai-sdk has been loaded. A test checks both
 * against ai-sdk's own `createUIMessageStreamResponse`.
 */

import type { UIMessageChunk } from 'ai';

/** The headers of a UI message stream response (ai-sdk's `UI_MESSAGE_STREAM_HEADERS`). */
export const UI_MESSAGE_STREAM_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache',
  connection: 'keep-alive',
  'x-vercel-ai-ui-message-stream': 'v1',
  'x-accel-buffering': 'no',
};

/** `data: <json>\n\n` per chunk, then `data: [DONE]\n\n`, UTF-8. */
export function serverSentEventsEncoder(): TransformStream<UIMessageChunk, Uint8Array> {
  const encoder = new TextEncoder();
  return new TransformStream<UIMessageChunk, Uint8Array>({
    transform(chunk, controller) {
      controller.enqueue(encoder.encode(`data: ${JSON.stringify(chunk)}\n\n`));
    },
    flush(controller) {
      controller.enqueue(encoder.encode('data: [DONE]\n\n'));
    },
  });
}
