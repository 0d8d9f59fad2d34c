// Manual compaction with the TypeScript SDK: the `manual` policy plus your own summariser.
//
// Start a server first (`make serve`), then run, from the repository root:
//
//     node examples/manual-compaction/compact.mjs
//
// Plain Node ESM (Node 20+), no compile step: it imports the built SDK from
// sdk-typescript/dist (in an app: `import { createClient } from '@fastpaca/fastpaca'`).
// The same loop as compact.py:
//
// 1. an append answers `needs_compaction: true`;
// 2. read the window (`ctx.context()`) and its `version`;
// 3. summarise the older part with `summarise` (a deterministic stand-in for
//    a model: the first sentence of each message);
// 4. `ctx.compact([system prompt, summary, ...recent], { ifVersion })`: messages as
//    read keep their `seq`, the summary has none (it is new). A 409
//    `version_conflict` means something wrote in between: read again.
//
// Settings: FASTPACA_URL (default http://127.0.0.1:4000) and FASTPACA_API_KEY.

import { randomUUID } from 'node:crypto';

import {
  APIConnectionError,
  ConflictError,
  createClient,
  FastpacaError,
} from '../../sdk-typescript/dist/index.js';

const BUDGET = 300; // tokens; small on purpose, so a short conversation fills it
const TRIGGER = 0.7; // needs_compaction once used_tokens > 0.7 x 300 = 210
const KEEP_RECENT = 4; // newest messages kept verbatim (with their seq)

const SUMMARY_HEADER = 'Summary of the earlier conversation:';
const SYSTEM = 'You are a travel assistant. Answer in two sentences at most.';

// A scripted conversation, appended in order until the server says the window needs compacting.
const CONVERSATION = [
  ['user', 'I want to visit Portugal in May. Where should I start?'],
  ['assistant', 'Start in Lisbon for three days. Then take the train north to Porto.'],
  ['user', 'How long is the train from Lisbon to Porto? Is it scenic?'],
  ['assistant', 'The Alfa Pendular takes about three hours. The coastal stretch is pretty.'],
  ['user', 'What should I eat in Porto? I am vegetarian.'],
  ['assistant', 'Try the vegetarian francesinha at a modern cafe. Port tastings are also fun.'],
  ['user', 'Is a day trip to the Douro valley worth it? We only have four days.'],
  ['assistant', 'Yes, the Douro valley is worth a day. Book a boat trip and a quinta visit.'],
  ['user', 'Do I need a car for the Douro? Or is there a train?'],
  ['assistant', 'The Douro line runs from Porto to Pinhao. No car is needed.'],
  ['user', 'What about the Algarve beaches? Are they warm in May?'],
];

const textOf = (message) =>
  message.parts
    .filter((part) => part.type === 'text')
    .map((part) => part.text)
    .join(' ');

const firstSentence = (text) => text.trim().split(/(?<=[.?!])\s/, 1)[0];

const isSummary = (message) => Array.isArray(message.metadata?.summary_of);

/**
 * The summariser: the first sentence of each message, with its role. An
 * earlier summary is carried over line by line. A real app would ask a model;
 * this one is deterministic and local (no network, no API key).
 */
function summarise(messages) {
  const lines = [];
  const covered = [];
  for (const message of messages) {
    if (isSummary(message)) {
      lines.push(...textOf(message).split('\n').slice(1));
      covered.push(...message.metadata.summary_of);
    } else {
      lines.push(`${message.role}: ${firstSentence(textOf(message))}`);
      covered.push(message.seq);
    }
  }
  return {
    role: 'system',
    parts: [{ type: 'text', text: [SUMMARY_HEADER, ...lines].join('\n') }],
    metadata: { summary_of: covered },
  };
}

function showWindow(title, window) {
  console.log(
    `${title}: ${window.messages.length} messages, ` +
      `${window.used_tokens}/${window.budget_tokens} tokens, ` +
      `needs_compaction=${window.needs_compaction}, version=${window.version}`,
  );
  for (const message of window.messages) {
    const seq = message.seq === null ? 'new' : String(message.seq);
    const first = textOf(message).split('\n')[0];
    console.log(
      `  ${seq.padStart(4)} ${message.role.padEnd(9)} ${String(message.token_count).padStart(3)}  ${first}`,
    );
  }
}

/** Read the window, summarise its older part, replace the window. */
async function compact(ctx, attempts = 5) {
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    const window = await ctx.context();
    showWindow('window before', window);
    // The replacement is the whole new window: keep the system prompt in it.
    const system = window.messages.filter((m) => m.role === 'system' && !isSummary(m));
    const rest = window.messages.filter((m) => m.role !== 'system' || isSummary(m));
    const older = rest.slice(0, Math.max(0, rest.length - KEEP_RECENT));
    const recent = rest.slice(older.length);
    if (older.length === 0) {
      console.log('nothing old enough to summarise');
      return;
    }
    const summary = summarise(older);
    let result;
    try {
      result = await ctx.compact([...system, summary, ...recent], { ifVersion: window.version });
    } catch (error) {
      if (error instanceof ConflictError) {
        console.log(`compaction refused (${error.code}), reading the window again`);
        continue;
      }
      throw error;
    }
    const covered = summary.metadata.summary_of;
    console.log(
      `summary of ${covered.length} messages (seq ${covered[0]}-${covered[covered.length - 1]}):`,
    );
    for (const line of textOf(summary).split('\n').slice(1)) {
      console.log(`  | ${line}`);
    }
    console.log(
      `compacted: window now ${result.message_count} messages, ${result.used_tokens} tokens, ` +
        `needs_compaction=${result.needs_compaction}, version=${result.version}`,
    );
    showWindow('window after', await ctx.context());
    return;
  }
  throw new Error(`could not compact after ${attempts} attempts`);
}

async function appendTurn(ctx, role, text) {
  const result = await ctx.append({ role, parts: [{ type: 'text', text }] });
  console.log(
    `appended seq=${String(result.seq).padEnd(2)} ${role.padEnd(9)} ` +
      `used_tokens=${String(result.used_tokens).padEnd(3)} needs_compaction=${result.needs_compaction}`,
  );
  return result;
}

async function main() {
  const contextId = `manual-compaction-ts-${randomUUID().slice(0, 8)}`;
  const fastpaca = createClient(); // FASTPACA_URL and FASTPACA_API_KEY from the environment
  console.log(`Fastpaca at ${fastpaca.baseUrl}, context ${contextId}`);
  const ctx = await fastpaca.context(contextId, {
    budget: BUDGET,
    trigger: TRIGGER,
    policy: { strategy: 'manual', config: {} },
  });
  await ctx.append({ role: 'system', parts: [{ type: 'text', text: SYSTEM }] });

  let next = 0;
  let filled = false;
  while (next < CONVERSATION.length && !filled) {
    const [role, text] = CONVERSATION[next++];
    filled = (await appendTurn(ctx, role, text)).needs_compaction;
  }
  if (!filled) {
    console.log('the conversation never filled the window');
    return 1;
  }
  console.log();
  await compact(ctx);
  console.log();
  // The conversation goes on in the room the compaction made.
  while (next < CONVERSATION.length) {
    const [role, text] = CONVERSATION[next++];
    if ((await appendTurn(ctx, role, text)).needs_compaction) {
      await compact(ctx); // the same loop, as often as it takes
    }
  }
  const info = await ctx.get();
  console.log(
    `context: last_seq=${info.last_seq} (the log keeps every message), ` +
      `window_messages=${info.window_messages}, used_tokens=${info.used_tokens}, ` +
      `compactions=${info.compactions}`,
  );
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  if (error instanceof APIConnectionError) {
    console.log(`cannot reach the server (${error.message}); start one with \`make serve\``);
  } else if (error instanceof FastpacaError) {
    console.log(`the server refused a request: ${error.message}`);
  } else {
    throw error;
  }
  process.exitCode = 1;
}
