/**
 * Window messages → ai-sdk `UIMessage` shape, without importing ai-sdk.
 *
 * A window can hold two styles of tool calls:
 *
 * - ai-sdk's: a `tool-<name>` or `dynamic-tool` part carries the call and its
 *   output in one part of the assistant message. These pass through as they
 *   are.
 * - the server's (written by other SDKs and the REST API): an assistant
 *   message with `{type: 'tool_call', id, name, payload}` and a later message
 *   (usually role `tool`) with `{type: 'tool_result', tool_call_id, payload}`.
 *   Each `tool_call` of an assistant message becomes one `dynamic-tool` part
 *   in its place: `toolName` = `name`, `toolCallId` = `id`, `input` =
 *   `payload`, and, when a `tool_result` for it is in the window, `state:
 *   'output-available'` with `output` = the result's `payload` (otherwise
 *   `state: 'input-available'`). The `tool_result` parts are then dropped
 *   from where they were, and a message left with no parts is dropped.
 *
 * Other rules: `tool_result` parts whose call is not in the window (orphans)
 * are dropped; messages whose role is not `system`, `user` or `assistant`
 * contribute only the tool results folded into their calls; `metadata` is
 * kept when it is not null; every other part is kept verbatim.
 */

import type { FastpacaUIMessage, MessagePart, Metadata } from './types.js';

/** The fields `toUIMessages` reads: a stored message, or any message with an id. */
export interface WindowMessageLike {
  id?: string | null | undefined;
  role: string;
  parts: readonly MessagePart[];
  metadata?: unknown;
}

const UI_ROLES = new Set(['system', 'user', 'assistant']);

/** The window's messages in ai-sdk `UIMessage` shape (see the module comment for the rules). */
export function toUIMessages(messages: readonly WindowMessageLike[]): FastpacaUIMessage[] {
  const resultsByCallId = new Map<string, MessagePart>();
  for (const message of messages) {
    for (const part of message.parts) {
      const callId = part['tool_call_id'];
      if (part.type === 'tool_result' && typeof callId === 'string' && !resultsByCallId.has(callId)) {
        resultsByCallId.set(callId, part);
      }
    }
  }
  const uiMessages: FastpacaUIMessage[] = [];
  messages.forEach((message, messageIndex) => {
    if (!UI_ROLES.has(message.role)) {
      return;
    }
    const role = message.role as FastpacaUIMessage['role'];
    const parts: MessagePart[] = [];
    message.parts.forEach((part, partIndex) => {
      if (part.type === 'tool_result') {
        return;
      }
      if (part.type === 'tool_call' && role === 'assistant') {
        const callId = typeof part['id'] === 'string' ? part['id'] : undefined;
        parts.push(
          toDynamicToolPart(
            part,
            callId ?? `tool_call_${messageIndex}_${partIndex}`,
            callId === undefined ? undefined : resultsByCallId.get(callId),
          ),
        );
        return;
      }
      parts.push(part);
    });
    if (parts.length === 0) {
      return;
    }
    const uiMessage: FastpacaUIMessage = {
      id: message.id ?? `message_${messageIndex}`,
      role,
      parts,
    };
    if (isMetadata(message.metadata)) {
      uiMessage.metadata = message.metadata;
    }
    uiMessages.push(uiMessage);
  });
  return uiMessages;
}

function toDynamicToolPart(call: MessagePart, toolCallId: string, result: MessagePart | undefined): MessagePart {
  const base = {
    type: 'dynamic-tool',
    toolName: typeof call['name'] === 'string' ? call['name'] : 'unknown',
    toolCallId,
    input: payloadOf(call, ['type', 'id', 'name']),
  };
  if (result === undefined) {
    return { ...base, state: 'input-available' };
  }
  return { ...base, state: 'output-available', output: payloadOf(result, ['type', 'tool_call_id']) };
}

/** `payload` by convention; without one, the part's other free fields. */
function payloadOf(part: MessagePart, reserved: readonly string[]): unknown {
  if ('payload' in part) {
    return part['payload'];
  }
  return Object.fromEntries(Object.entries(part).filter(([field]) => !reserved.includes(field)));
}

function isMetadata(value: unknown): value is Metadata {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
