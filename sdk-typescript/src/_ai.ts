/**
 * The ai-sdk runtime the stream helper uses, loaded on the first `ctx.stream`
 * call (see `stream.ts`), so that the client works without `ai` installed.
 */

import { convertToModelMessages, type ModelMessage, type ToolSet, type UIMessage } from 'ai';

/**
 * The window's UI messages as model messages for `streamText`. Tool parts
 * without an output (a call nothing answered) are left out: providers refuse
 * a tool call without its result.
 */
export function toModelMessages(uiMessages: UIMessage[], tools: ToolSet | undefined): Promise<ModelMessage[]> {
  return convertToModelMessages(uiMessages, {
    ignoreIncompleteToolCalls: true,
    ...(tools === undefined ? {} : { tools }),
  });
}
