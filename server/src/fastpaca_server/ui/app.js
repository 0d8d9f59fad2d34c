// The Fastpaca inspector: a hash-routed page over the /v1 API.
//   #/                the contexts, newest activity first, with a search box
//   #/contexts/{id}   one context: its log beside its LLM window, live
// No framework and no build step. Every string from the API is rendered as text (dom.js).

import {
  ApiError,
  api,
  contextPath,
  forgetKey,
  onKeyChange,
  setKeyPrompt,
  storedKey,
} from './api.js';
import { compactJson, fmt, h, seqRange, seqRuns, timeAgo, timeElement, tokensAt } from './dom.js';
import { Feed } from './feed.js';

const PAGE = 50; // log messages per tail page, contexts per list page
const REFRESH_DELAY = 60; // ms: the events of one version arrive together; refresh once

const main = document.getElementById('main');
const crumbs = document.getElementById('crumbs');
const feedStatus = document.getElementById('feed-status');

// --- routing ------------------------------------------------------------------------

let current = null; // the view shown: { destroy() }

function route() {
  current?.destroy();
  const match = /^#\/contexts\/([^/?]+)$/.exec(window.location.hash);
  if (match) {
    let id = match[1];
    try {
      id = decodeURIComponent(id);
    } catch {
      // a malformed escape: the API answers 400 invalid_context_id for it
    }
    current = new ContextView(id);
  } else {
    current = new ListView();
  }
}

function contextHref(id) {
  return `#/contexts/${encodeURIComponent(id)}`;
}

function setCrumbs(...items) {
  crumbs.replaceChildren(
    h('a', { href: '#/', testid: 'crumb-contexts' }, 'Contexts'),
    ...items.flatMap((item) => [h('span', { class: 'sep' }, '/'), item]),
  );
}

function setFeedStatus(state, detail) {
  if (state === null) {
    feedStatus.hidden = true;
    return;
  }
  const labels = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    ended: 'feed ended',
  };
  feedStatus.hidden = false;
  feedStatus.dataset.state = state;
  feedStatus.textContent = labels[state] ?? state;
  feedStatus.title = detail ?? '';
  if (state === 'ended' && detail) feedStatus.textContent = `feed ended: ${detail}`;
}

/** `part` of `whole` as a CSS percentage, to two decimals. */
function percent(part, whole) {
  return `${Math.round((part / whole) * 10000) / 100}%`;
}

/** A hidden alert box: `show(error)` (an ApiError, an Error or a sentence), `clear()`. */
function errorBox() {
  const box = h('p', { class: 'error', testid: 'error', role: 'alert', hidden: true });
  box.show = (error) => {
    box.hidden = false;
    if (error instanceof ApiError) {
      box.textContent = `${error.status} ${error.code}: ${error.message}`;
    } else if (error instanceof Error) {
      box.textContent = `Request failed: ${error.message}`;
    } else {
      box.textContent = String(error);
    }
  };
  box.clear = () => {
    box.hidden = true;
    box.textContent = '';
  };
  return box;
}

// --- the API key form -----------------------------------------------------------------

function setupKeyForm() {
  const panel = document.getElementById('key-panel');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  const message = document.getElementById('key-error');
  const forget = document.getElementById('forget-key');
  let answer = null;

  setKeyPrompt((refused) => {
    panel.hidden = false;
    message.hidden = !refused;
    message.textContent = refused
      ? 'The server refused this key (401 unauthorized). Check it and try again.'
      : '';
    input.value = '';
    input.focus();
    return new Promise((resolve) => {
      answer = resolve;
    });
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key || answer === null) return;
    panel.hidden = true;
    const resolve = answer;
    answer = null;
    resolve(key);
  });
  forget.addEventListener('click', () => {
    forgetKey();
    route(); // reload the view: the next request asks for a key
  });
  const showForget = (has) => {
    forget.hidden = !has;
  };
  onKeyChange(showForget);
  showForget(storedKey() !== null);
}

// --- the list of contexts --------------------------------------------------------------

/** Search text → query parameters: `key=value` terms filter metadata, the rest is `q`. */
function searchParams(text, status) {
  const params = new URLSearchParams({ order: 'recent', limit: String(PAGE) });
  if (status !== 'active') params.set('status', status);
  const words = [];
  for (const term of text.trim().split(/\s+/).filter(Boolean)) {
    const filter = /^([^=]+)=(.*)$/.exec(term);
    if (filter) params.append(`metadata.${filter[1]}`, filter[2]);
    else words.push(term);
  }
  if (words.length) params.set('q', words.join(' '));
  return params;
}

class ListView {
  constructor() {
    this.alive = true;
    this.generation = 0;
    this.cursor = null;
    this.timer = null;
    document.title = 'Contexts · Fastpaca inspector';
    setCrumbs();
    setFeedStatus(null);

    this.search = h('input', {
      type: 'search',
      testid: 'search',
      placeholder: 'Search ids and metadata values; key=value matches one metadata field',
      'aria-label': 'Search contexts',
      oninput: () => this.schedule(),
    });
    this.status = h(
      'select',
      { testid: 'status-filter', 'aria-label': 'Status', onchange: () => this.load(false) },
      ['active', 'all', 'tombstoned', 'purged'].map((value) => h('option', { value }, value)),
    );
    this.rows = h('tbody', { testid: 'context-list' });
    this.more = h(
      'button',
      { type: 'button', testid: 'load-more', hidden: true, onclick: () => this.load(true) },
      'Load more',
    );
    this.note = h('p', { class: 'note', testid: 'list-note' });
    this.error = errorBox();
    const refresh = h('button', { type: 'button', onclick: () => this.load(false) }, 'Refresh');
    const head = h(
      'tr',
      {},
      ['Context', 'Last activity', 'Status', 'Log', 'Window', 'Policy', 'Metadata'].map((title) =>
        h('th', { scope: 'col' }, title),
      ),
    );
    main.replaceChildren(
      h(
        'section',
        { class: 'list-view', testid: 'list-view' },
        h('div', { class: 'toolbar' }, this.search, this.status, refresh),
        this.error,
        h('table', { class: 'contexts' }, h('thead', {}, head), this.rows),
        this.more,
        this.note,
      ),
    );
    this.search.focus();
    this.load(false);
  }

  destroy() {
    this.alive = false;
    clearTimeout(this.timer);
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(false), 200);
  }

  async load(more) {
    const generation = ++this.generation;
    const params = searchParams(this.search.value, this.status.value);
    if (more && this.cursor) params.set('cursor', this.cursor);
    let page;
    try {
      page = await api(`/v1/contexts?${params}`);
    } catch (error) {
      if (!this.alive || generation !== this.generation) return;
      this.error.show(error);
      if (!more) this.rows.replaceChildren(); // no stale rows under a failed search
      this.more.hidden = true;
      this.note.textContent = '';
      return;
    }
    if (!this.alive || generation !== this.generation) return; // a newer search answered
    this.error.clear();
    const rows = page.contexts.map((context) => this.row(context));
    if (more) this.rows.append(...rows);
    else this.rows.replaceChildren(...rows);
    this.cursor = page.next_cursor;
    this.more.hidden = !page.has_more;
    const shown = this.rows.children.length;
    const searching = this.search.value.trim() !== '';
    if (shown === 0) {
      this.note.textContent = searching ? 'No context matches.' : 'No contexts yet.';
    } else {
      const more = page.has_more ? ' so far' : '';
      this.note.textContent = `${plural(shown, 'context')}${more}, newest activity first.`;
    }
  }

  row(context) {
    const open = () => {
      window.location.hash = contextHref(context.id);
    };
    const hasMetadata = Object.keys(context.metadata ?? {}).length > 0;
    const metadata = hasMetadata ? compactJson(context.metadata) : '';
    const tokens = `${fmt(context.used_tokens)}/${fmt(context.token_budget)} tok`;
    return h(
      'tr',
      { testid: 'context-row', dataset: { id: context.id }, onclick: open },
      h('td', { class: 'mono' }, h('a', { href: contextHref(context.id) }, context.id)),
      h('td', {}, timeElement(context.updated_at, true)),
      h('td', {}, h('span', { class: `chip status-${context.status}` }, context.status)),
      h('td', { class: 'num' }, `${fmt(context.last_seq)} msgs`),
      h('td', { class: 'num' }, `${fmt(context.window_messages)} msgs · ${tokens}`),
      h('td', { class: 'mono' }, context.policy.strategy),
      h('td', { class: 'mono clip', title: metadata }, metadata),
    );
  }
}

// --- one context ---------------------------------------------------------------------------

const STRATEGIES = {
  last_n: { limit: 200 },
  skip_parts: { limit: 200, skip_kinds: ['tool', 'dynamic-tool', 'reasoning'] },
  budget: { target_ratio: 0.5 },
  time_window: { max_age_seconds: 3600 },
  strip_tool_results: {
    keep: 3,
    placeholder: '[tool output cleared]',
    exclude_tools: [],
    clear_at_least: 0,
    target_ratio: 0.5,
  },
  pipeline: {
    steps: [
      { strategy: 'strip_tool_results', config: { keep: 2 } },
      { strategy: 'last_n', config: { limit: 100 } },
    ],
  },
  summarize: { target_ratio: 0.5 },
  manual: {},
};

/** "1 record", "3 records". */
function plural(count, noun) {
  return `${fmt(count)} ${noun}${count === 1 ? '' : 's'}`;
}

function partView(part) {
  if (part !== null && part.type === 'text' && typeof part.text === 'string') {
    return h('p', { class: 'part text' }, part.text);
  }
  return h('code', { class: 'part json' }, compactJson(part));
}

function isPinned(message) {
  return message.role === 'system' || message.metadata?.pinned === true;
}

function messageView(message, testid, ...extra) {
  return h(
    'article',
    { class: 'msg', testid, dataset: { seq: message.seq ?? '', role: message.role } },
    h(
      'header',
      { class: 'msg-head' },
      h('span', { class: 'seq mono' }, message.seq === null ? 'no seq' : `#${message.seq}`),
      h('span', { class: 'role' }, message.role),
      h('span', { class: 'tokens' }, `${fmt(message.token_count)} tok`),
      isPinned(message) && h('span', { class: 'chip pin' }, 'pinned'),
      ...extra,
      h('span', { class: 'spacer' }),
      timeElement(message.created_at),
    ),
    h('div', { class: 'parts' }, (message.parts ?? []).map(partView)),
    message.metadata !== null &&
      message.metadata !== undefined &&
      h('div', { class: 'meta mono' }, `metadata ${compactJson(message.metadata)}`),
  );
}

function ranges(list) {
  return (list ?? []).map(([from, to]) => seqRange(from, to)).join(', ');
}

function contains(list, seq) {
  return (list ?? []).some(([from, to]) => from <= seq && seq <= to);
}

/** Which step of the policy acted: "step 0", "step 1 last_n" (a pipeline's), "POST /compact". */
function stepName(record, action) {
  if (action.reason === 'replaced') return 'POST /compact';
  if (action.step === null) return 'final trim to the budget';
  if (record.policy === 'pipeline') return `step ${action.step} ${action.policy}`;
  return `step ${action.step}`;
}

/** "compaction #3 (pipeline, step 1 strip_tool_results): tool_output_cleared — detail". */
function describeAction(record, action) {
  const detail = action.detail ? ` — ${action.detail}` : '';
  const where = `${record.policy}, ${stepName(record, action)}`;
  return `compaction #${record.number} (${where}): ${action.reason}${detail}`;
}

/** A window segment: "log #21–#30 · 10 msgs · 70 tok", "summary of #2–#21 · …". */
function segmentView(segment) {
  let label = segment.type;
  if (segment.type === 'log') label = `log ${seqRange(segment.from_seq, segment.to_seq)}`;
  if (segment.type === 'summary') {
    label = `summary of ${seqRange(segment.from_seq, segment.to_seq)}`;
  }
  const count = `${fmt(segment.count)} msg${segment.count === 1 ? '' : 's'}`;
  const size = `${count} · ${fmt(segment.tokens)} tok`;
  return h(
    'span',
    { class: `segment seg-${segment.type}`, testid: 'segment', dataset: { type: segment.type } },
    h('b', {}, label),
    ` · ${size}`,
  );
}

/** One compaction record: its head line, its error (a failed summary), its actions. */
function recordView(record) {
  const versions =
    record.runs > 1
      ? ` · ${fmt(record.runs)} runs (v${record.first_version}–v${record.version})`
      : ` · v${record.version}`;
  const actions = record.actions.map((action) =>
    h(
      'li',
      {},
      `${stepName(record, action)}: ${action.reason}`,
      action.removed.length ? ` · removed ${ranges(action.removed)}` : '',
      action.removed_unlogged ? ` · removed ${action.removed_unlogged} without seq` : '',
      action.changed.length ? ` · changed ${ranges(action.changed)}` : '',
      action.detail ? ` — ${action.detail}` : '',
    ),
  );
  return h(
    'li',
    { testid: 'record', dataset: { number: record.number } },
    h(
      'div',
      { class: 'record-head' },
      h('b', { class: 'mono' }, `#${record.number}`),
      ` ${record.cause} · ${record.policy} · ${record.outcome}${versions}`,
      ` · ${fmt(record.tokens_before)} → ${fmt(record.tokens_after)} tok · `,
      timeElement(record.at, true),
    ),
    record.error ? h('div', { class: 'error-text' }, record.error) : null,
    h('ul', {}, actions),
  );
}

class ContextView {
  constructor(id) {
    this.id = id;
    this.alive = true;
    this.entries = new Map(); // seq → { message, element, note }
    this.oldest = null;
    this.newest = 0;
    this.lastSeq = 0; // the newest seq the page knows of
    this.hasOlder = false;
    this.loadingOlder = false;
    this.context = null;
    this.window = null;
    this.records = [];
    this.recordTotal = 0;
    this.settledSeq = 0;
    this.refreshTimer = null;
    this.refreshing = false;
    this.dirty = false;
    this.previewFilled = false;
    this.feed = null;
    document.title = `${id} · Fastpaca inspector`;
    setCrumbs(h('span', { class: 'mono', testid: 'crumb-context' }, id));
    setFeedStatus(null);
    this.build();
    this.start();
  }

  destroy() {
    this.alive = false;
    clearTimeout(this.refreshTimer);
    this.feed?.stop();
  }

  path(suffix = '') {
    return contextPath(this.id, suffix);
  }

  // --- layout ---

  build() {
    this.error = errorBox();
    this.title = h('h1', { class: 'mono', testid: 'context-id' }, this.id);
    this.statusChip = h('span', { class: 'chip', testid: 'context-status' });
    this.budget = this.buildBudget();
    this.counters = h('dl', { class: 'counters', testid: 'counters' });
    this.logStart = h('p', { class: 'log-start', testid: 'log-start' }, 'Loading…');
    this.logList = h('div', { class: 'log-list' });
    this.logScroll = h(
      'div',
      { class: 'scroll log-scroll', testid: 'log', onscroll: () => this.maybeLoadOlder() },
      this.logStart,
      this.logList,
    );
    this.logCount = h('span', { class: 'count', testid: 'log-count' });
    this.windowHead = h('span', { class: 'count', testid: 'window-count' });
    this.segments = h('div', { class: 'segments', testid: 'segments' });
    this.windowList = h('div', { class: 'scroll window-list', testid: 'window' });
    this.recordList = h('ol', { class: 'records', testid: 'records' });
    this.recordCount = h('span', { class: 'count' });
    this.preview = this.buildPreview();
    main.replaceChildren(
      h(
        'section',
        { class: 'context-view', testid: 'context-view' },
        h(
          'div',
          { class: 'panel summary', testid: 'context-summary' },
          h('div', { class: 'title-row' }, this.title, this.statusChip),
          this.error,
          this.budget.element,
          this.counters,
        ),
        h(
          'div',
          { class: 'columns' },
          h(
            'section',
            { class: 'panel column', testid: 'log-column' },
            h('h2', {}, 'Log ', this.logCount),
            h(
              'p',
              { class: 'legend' },
              h('span', { class: 'swatch in' }),
              'in the LLM window ',
              h('span', { class: 'swatch out' }),
              'not in it (and why)',
            ),
            this.logScroll,
          ),
          h(
            'section',
            { class: 'panel column', testid: 'window-column' },
            h('h2', {}, 'LLM window ', this.windowHead),
            this.segments,
            this.windowList,
            h(
              'details',
              { class: 'records-box', testid: 'records-box' },
              h('summary', {}, 'Compaction records ', this.recordCount),
              this.recordList,
            ),
            this.preview.element,
          ),
        ),
      ),
    );
  }

  buildBudget() {
    const fill = h('div', { class: 'bar-fill' });
    const trigger = h('div', { class: 'bar-trigger', title: 'trigger' });
    const limit = h('div', { class: 'bar-budget', title: 'budget' });
    const used = h('span', { class: 'num', testid: 'budget-used' });
    const triggerText = h('span', { class: 'num', testid: 'budget-trigger' });
    const total = h('span', { class: 'num', testid: 'budget-total' });
    const share = h('span', { class: 'muted', testid: 'budget-share' });
    const ratio = h('span', { class: 'muted' });
    const bar = h('div', { class: 'bar', testid: 'budget-bar', role: 'img' }, fill, trigger, limit);
    const element = h(
      'div',
      { class: 'budget' },
      bar,
      h(
        'div',
        { class: 'bar-labels' },
        h('span', {}, h('span', { class: 'key key-used' }), 'used ', used, ' tokens ', share),
        h('span', {}, h('span', { class: 'key key-trigger' }), 'trigger ', triggerText, ' ', ratio),
        h('span', {}, h('span', { class: 'key key-budget' }), 'budget ', total),
      ),
    );
    const render = (context) => {
      const budget = context.token_budget;
      const at = tokensAt(context.trigger_ratio, budget);
      const scale = Math.max(budget, context.used_tokens, 1);
      fill.style.width = percent(context.used_tokens, scale);
      trigger.style.left = percent(at, scale);
      limit.style.left = percent(budget, scale);
      bar.classList.toggle('over-trigger', context.used_tokens > at);
      bar.classList.toggle('over-budget', context.used_tokens > budget);
      bar.setAttribute(
        'aria-label',
        `${context.used_tokens} of ${budget} tokens used; trigger at ${at}`,
      );
      used.textContent = fmt(context.used_tokens);
      triggerText.textContent = fmt(at);
      total.textContent = fmt(budget);
      share.textContent = `(${Math.round((context.used_tokens / budget) * 100)}%)`;
      ratio.textContent = `(${context.trigger_ratio} × budget)`;
    };
    return { element, render };
  }

  // --- loading ---

  async start() {
    let version;
    try {
      version = await this.loadAll();
    } catch (error) {
      if (!this.alive) return;
      this.error.show(error);
      this.logStart.textContent = '';
      return;
    }
    if (!this.alive || version === undefined) return;
    this.feed = new Feed(this.path('/events'), version, {
      onEvent: (type, data) => this.onEvent(type, data),
      onStatus: (state, detail) => {
        if (this.alive) setFeedStatus(state, detail);
      },
    }).start();
  }

  /** Everything, from scratch; resolves with the version the feed starts after. */
  async loadAll() {
    const context = await api(this.path());
    const [llmWindow, records, page] = await Promise.all([
      api(this.path('/context')),
      this.fetchRecords(),
      api(this.path(`/tail?offset=0&limit=${PAGE}`)),
    ]);
    if (!this.alive) return undefined;
    this.error.clear();
    this.apply(context, llmWindow, records);
    this.resetLog(page);
    return context.version;
  }

  async fetchRecords() {
    const records = [];
    let after = 0;
    let total = 0;
    for (;;) {
      const page = await api(this.path(`/compactions?after=${after}&limit=1000`));
      records.push(...page.records);
      total = page.compactions;
      if (!page.has_more || page.records.length === 0) break;
      after = page.records[page.records.length - 1].number;
    }
    return { records, total };
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), REFRESH_DELAY);
  }

  /** Re-read the context, its window and its records (one refresh at a time). */
  async refresh() {
    if (this.refreshing) {
      this.dirty = true;
      return;
    }
    this.refreshing = true;
    try {
      do {
        this.dirty = false;
        // The context first: every seq up to its last_seq is then settled in the window read after.
        const context = await api(this.path());
        const [llmWindow, records] = await Promise.all([
          api(this.path('/context')),
          this.fetchRecords(),
        ]);
        if (!this.alive) return;
        this.error.clear();
        this.apply(context, llmWindow, records);
        this.annotate();
      } while (this.dirty && this.alive);
    } catch (error) {
      if (this.alive) this.error.show(error);
    } finally {
      this.refreshing = false;
    }
  }

  onEvent(type, data) {
    if (!this.alive) return;
    if (type === 'message') {
      this.lastSeq = Math.max(this.lastSeq, data.seq);
      if (data.message) this.addMessage(data.message);
    } else if (type === 'gap') {
      // Versions the server no longer keeps: start over from REST (the feed goes on).
      this.loadAll().catch((error) => this.error.show(error));
    } else if (type !== 'error') {
      this.scheduleRefresh(); // context, compaction, compaction_record, tombstoned
    }
  }

  // --- the summary: budget bar and counters ---

  apply(context, llmWindow, { records, total }) {
    this.context = context;
    this.window = llmWindow;
    this.records = records;
    this.recordTotal = total;
    this.lastSeq = Math.max(this.lastSeq, context.last_seq);
    this.settledSeq = context.last_seq; // newer messages wait for the next refresh
    this.statusChip.textContent = context.status;
    this.statusChip.className = `chip status-${context.status}`;
    this.budget.render(context);
    this.renderCounters(context);
    this.renderWindow(llmWindow);
    this.renderRecords();
    if (!this.previewFilled) this.fillPreview(context);
  }

  renderCounters(context) {
    const last = context.last_compaction;
    const items = [
      ['version', fmt(context.version)],
      ['last_seq', `${plural(context.last_seq, 'message')} in the log`],
      ['window_messages', `${plural(context.window_messages, 'message')} in the window`],
      ['used_tokens', `${fmt(context.used_tokens)} of ${fmt(context.token_budget)} tokens`],
      ['needs_compaction', context.needs_compaction ? 'yes' : 'no'],
      [
        'compactions',
        last ? `${fmt(context.compactions)}, last ${timeAgo(last.at)} by ${last.policy}` : '0',
      ],
      ['policy', `${context.policy.strategy} ${compactJson(context.policy.config ?? {})}`, 'wide'],
      ['trigger_ratio', String(context.trigger_ratio)],
      ['tokenizer', context.tokenizer],
      ['archived_seq', fmt(context.archived_seq ?? 0)],
      [
        'summary_failures',
        context.summary_failures
          ? `${fmt(context.summary_failures)}: ${context.last_summary_error ?? ''}`
          : '0',
      ],
      ['created_at', context.created_at],
      ['updated_at', `${context.updated_at} (${timeAgo(context.updated_at)})`],
      ['metadata', compactJson(context.metadata ?? {}), 'wide'],
    ];
    this.counters.replaceChildren(
      ...items.map(([name, value, wide]) =>
        h(
          'div',
          { class: wide ? 'counter wide' : 'counter' },
          h('dt', {}, name),
          h('dd', { class: 'mono', dataset: { field: name } }, value),
        ),
      ),
    );
  }

  // --- the window ---

  renderWindow(llmWindow) {
    this.windowSeqs = new Map(); // seq → the window's copy of the message
    const messages = llmWindow.messages;
    const needs = llmWindow.needs_compaction ? ' · needs compaction' : '';
    const tokens = plural(llmWindow.used_tokens, 'token');
    const size = `${plural(messages.length, 'message')} · ${tokens}`;
    this.windowHead.textContent = `v${llmWindow.version} · ${size}${needs}`;
    this.segments.replaceChildren(...llmWindow.segments.map(segmentView));
    // Each message belongs to the segment that counts it, in window order.
    const views = [];
    let index = 0;
    for (const segment of llmWindow.segments) {
      for (let i = 0; i < segment.count && index < messages.length; i += 1, index += 1) {
        views.push(this.windowMessage(messages[index], segment));
      }
    }
    for (; index < messages.length; index += 1) views.push(this.windowMessage(messages[index]));
    const stick = this.atBottom(this.windowList);
    if (views.length === 0) views.push(h('p', { class: 'muted' }, 'The window is empty.'));
    this.windowList.replaceChildren(...views);
    if (stick) this.windowList.scrollTop = this.windowList.scrollHeight;
  }

  windowMessage(message, segment) {
    if (message.seq !== null) this.windowSeqs.set(message.seq, message);
    let badge = null;
    if (segment?.type === 'summary') {
      const covered = `summary of ${seqRange(segment.from_seq, segment.to_seq)}`;
      badge = h('span', { class: 'chip summary', testid: 'summary-badge' }, covered);
    } else if (segment?.type === 'replacement') {
      badge = h('span', { class: 'chip replacement' }, 'replacement');
    }
    const element = messageView(message, 'window-message', badge);
    if (segment) element.dataset.segment = segment.type;
    return element;
  }

  renderRecords() {
    const gone = this.discardedRecords();
    const discarded = gone ? `, ${fmt(gone)} older ones discarded` : '';
    const compactions = plural(this.recordTotal, 'compaction');
    const records = plural(this.records.length, 'record');
    this.recordCount.textContent = `(${records}${discarded}; ${compactions})`;
    this.recordList.replaceChildren(...[...this.records].reverse().map(recordView));
  }

  /** How many records the server no longer keeps (it keeps the newest 100). */
  discardedRecords() {
    return this.records.length ? this.records[0].number - 1 : 0;
  }

  /** The newest applied record whose actions `removed` (or `changed`) `seq`. */
  recordFor(seq, field) {
    for (let i = this.records.length - 1; i >= 0; i -= 1) {
      const record = this.records[i];
      if (record.outcome !== 'applied') continue;
      for (const action of record.actions) {
        if (contains(action[field], seq)) return { record, action };
      }
    }
    return null;
  }

  // --- the log ---

  resetLog(page) {
    this.entries.clear();
    this.logList.replaceChildren();
    this.oldest = null;
    this.newest = 0;
    this.lastSeq = Math.max(this.lastSeq, page.last_seq);
    this.logList.append(...page.messages.map((message) => this.entry(message)));
    this.hasOlder = page.has_more;
    this.renderLogEdges();
    this.annotate();
    this.logScroll.scrollTop = this.logScroll.scrollHeight;
    this.maybeLoadOlder();
  }

  entry(message) {
    const note = h('p', { class: 'why', testid: 'log-note' });
    const element = messageView(message, 'log-message');
    element.append(note);
    this.entries.set(message.seq, { message, element, note });
    this.oldest = this.oldest === null ? message.seq : Math.min(this.oldest, message.seq);
    this.newest = Math.max(this.newest, message.seq);
    return element;
  }

  renderLogEdges() {
    this.logStart.textContent = this.hasOlder
      ? 'Scroll up for older messages…'
      : this.entries.size
        ? 'Start of the log.'
        : 'The log is empty.';
    this.logStart.dataset.more = String(this.hasOlder);
    const shown = this.entries.size;
    this.logCount.textContent = `${fmt(shown)} of ${fmt(this.lastSeq)} loaded`;
  }

  atBottom(element) {
    return element.scrollHeight - element.scrollTop - element.clientHeight < 48;
  }

  addMessage(message) {
    if (this.entries.has(message.seq)) return; // replayed after a reconnect
    if (this.oldest !== null && message.seq < this.oldest) return; // scrolling up loads it
    const stick = this.atBottom(this.logScroll);
    const newest = this.newest;
    const element = this.entry(message);
    if (message.seq > newest) {
      this.logList.append(element); // the usual case: the feed sends seqs in order
    } else {
      let next = message.seq + 1;
      while (!this.entries.has(next)) next += 1;
      this.entries.get(next).element.before(element);
    }
    this.annotateEntry(this.entries.get(message.seq));
    this.renderLogEdges();
    if (stick) this.logScroll.scrollTop = this.logScroll.scrollHeight;
  }

  maybeLoadOlder() {
    if (this.logScroll.scrollTop < 160 && this.hasOlder && !this.loadingOlder) {
      this.loadOlder();
    }
  }

  /** One page of older messages (tail's offset counts from the newest message). */
  async loadOlder() {
    this.loadingOlder = true;
    this.logStart.textContent = 'Loading older messages…';
    try {
      let page;
      let older = [];
      // Twice at most: if the log grew since lastSeq was learnt, the first page is too new.
      for (let attempt = 0; attempt < 2 && older.length === 0; attempt += 1) {
        const offset = Math.max(0, this.lastSeq - (this.oldest ?? 1) + 1);
        page = await api(this.path(`/tail?offset=${offset}&limit=${PAGE}`));
        if (!this.alive) return;
        this.lastSeq = Math.max(this.lastSeq, page.last_seq);
        older = page.messages.filter((message) => message.seq < (this.oldest ?? Infinity));
        if (!page.has_more) break;
      }
      const before = this.logScroll.scrollHeight;
      const top = this.logScroll.scrollTop;
      this.logList.prepend(...older.map((message) => this.entry(message)));
      for (const message of older) this.annotateEntry(this.entries.get(message.seq));
      this.hasOlder = page.has_more && (this.oldest ?? 1) > 1;
      this.logScroll.scrollTop = top + (this.logScroll.scrollHeight - before);
    } catch (error) {
      if (this.alive) this.error.show(error);
      this.hasOlder = false;
    } finally {
      this.loadingOlder = false;
    }
    if (!this.alive) return;
    this.renderLogEdges();
    requestAnimationFrame(() => this.maybeLoadOlder());
  }

  // --- in the window, or why not ---

  annotate() {
    for (const entry of this.entries.values()) this.annotateEntry(entry);
  }

  annotateEntry(entry) {
    if (!this.window || !entry) return;
    const { message, element, note } = entry;
    if (message.seq > this.settledSeq) {
      // Arrived over the feed after the window was read: the refresh it set off says.
      element.classList.remove('in-window', 'dropped');
      delete element.dataset.state;
      note.hidden = true;
      return;
    }
    const copy = this.windowSeqs.get(message.seq);
    element.classList.toggle('in-window', copy !== undefined);
    element.classList.toggle('dropped', copy === undefined);
    if (copy !== undefined) {
      const changed = compactJson(copy.parts) !== compactJson(message.parts);
      element.dataset.state = changed ? 'changed' : 'window';
      note.textContent = changed ? `In the window, changed by ${this.changedBy(message.seq)}.` : '';
      note.hidden = !changed;
    } else {
      element.dataset.state = 'dropped';
      note.textContent = `Not in the window: ${this.droppedBy(message.seq)}`;
      note.hidden = false;
    }
  }

  changedBy(seq) {
    const found = this.recordFor(seq, 'changed');
    return found ? describeAction(found.record, found.action) : 'a compaction';
  }

  /** Why `seq` left the window (or never entered it), as a sentence. */
  droppedBy(seq) {
    const found = this.recordFor(seq, 'removed');
    if (found) return `dropped by ${describeAction(found.record, found.action)}`;
    const summary = this.window.segments.find(
      (segment) => segment.type === 'summary' && segment.from_seq <= seq && seq <= segment.to_seq,
    );
    if (summary) {
      return `folded into the summary of ${seqRange(summary.from_seq, summary.to_seq)}.`;
    }
    if (this.discardedRecords() > 0) {
      const kept = this.records.length;
      return `dropped by an older compaction (the context keeps its newest ${kept} records).`;
    }
    return (
      'no compaction record names it (a tool result without its call, ' +
      'or a compaction from before records were kept).'
    );
  }

  // --- preview ---

  buildPreview() {
    const strategy = h('input', {
      testid: 'preview-strategy',
      list: 'strategies',
      required: true,
      spellcheck: 'false',
    });
    const list = h(
      'datalist',
      { id: 'strategies' },
      Object.keys(STRATEGIES).map((name) => h('option', { value: name })),
    );
    const config = h('textarea', {
      testid: 'preview-config',
      rows: 4,
      spellcheck: 'false',
      class: 'mono',
    });
    const budget = h('input', { testid: 'preview-budget', type: 'number', min: 1, step: 1 });
    const trigger = h('input', {
      testid: 'preview-trigger',
      type: 'number',
      min: 0.01,
      max: 1,
      step: 0.01,
    });
    const tokenizer = h(
      'select',
      { testid: 'preview-tokenizer' },
      ['o200k_base', 'cl100k_base'].map((value) => h('option', { value }, value)),
    );
    const error = errorBox();
    error.dataset.testid = 'preview-error';
    const result = h('div', { class: 'preview-result', testid: 'preview-result' });
    strategy.addEventListener('change', () => {
      const own = this.context?.policy;
      const name = strategy.value.trim();
      if (own && name === own.strategy) config.value = JSON.stringify(own.config ?? {});
      else if (name in STRATEGIES) config.value = JSON.stringify(STRATEGIES[name]);
    });
    const form = h(
      'form',
      {
        class: 'preview-form',
        testid: 'preview-form',
        onsubmit: (event) => {
          event.preventDefault();
          this.runPreview();
        },
      },
      h('label', {}, 'strategy', strategy, list),
      h('label', { class: 'wide' }, 'config (JSON)', config),
      h('label', {}, 'token budget', budget),
      h('label', {}, 'trigger ratio', trigger),
      h('label', {}, 'tokenizer', tokenizer),
      h('button', { type: 'submit', testid: 'preview-run' }, 'Preview'),
    );
    const element = h(
      'details',
      { class: 'preview', testid: 'preview' },
      h('summary', {}, 'Preview another config'),
      h(
        'p',
        { class: 'muted' },
        'The window this context would have had under this config from the start. Nothing changes.',
      ),
      form,
      error,
      result,
    );
    return { element, strategy, config, budget, trigger, tokenizer, error, result };
  }

  fillPreview(context) {
    const form = this.preview;
    form.strategy.value = context.policy.strategy;
    form.config.value = JSON.stringify(context.policy.config ?? {});
    form.budget.value = String(context.token_budget);
    form.trigger.value = String(context.trigger_ratio);
    form.tokenizer.value = context.tokenizer;
    this.previewFilled = true;
  }

  async runPreview() {
    const form = this.preview;
    form.error.clear();
    const body = { policy: { strategy: form.strategy.value.trim() } };
    const configText = form.config.value.trim();
    if (configText) {
      try {
        body.policy.config = JSON.parse(configText);
      } catch (error) {
        form.error.show(`The config is not JSON: ${error.message}`);
        return;
      }
    }
    if (form.budget.value !== '') body.token_budget = Number(form.budget.value);
    if (form.trigger.value !== '') body.trigger_ratio = Number(form.trigger.value);
    body.tokenizer = form.tokenizer.value;
    form.result.dataset.state = 'loading';
    let preview;
    try {
      preview = await api(this.path('/preview'), { method: 'POST', body });
    } catch (error) {
      if (!this.alive) return;
      form.result.dataset.state = 'error';
      form.result.replaceChildren();
      form.error.show(error);
      return;
    }
    if (!this.alive) return;
    this.renderPreview(preview);
  }

  renderPreview(preview) {
    const { result } = this.preview;
    const seqs = preview.messages.map((message) => message.seq).filter((seq) => seq !== null);
    const now = new Set(this.windowSeqs?.keys() ?? []);
    const would = new Set(seqs);
    const gained = seqs.filter((seq) => !now.has(seq));
    const lost = [...now].filter((seq) => !would.has(seq));
    const budget = preview.config.token_budget;
    const trigger = tokensAt(preview.config.trigger_ratio, budget);
    const { policy } = preview.config;
    const tokens = new Map(preview.breakdown.map((item, index) => [index, item.token_count]));
    result.dataset.state = 'done';
    result.replaceChildren(
      h(
        'p',
        { class: 'preview-line' },
        h('b', { testid: 'preview-count' }, fmt(preview.messages.length)),
        preview.messages.length === 1 ? ' message · ' : ' messages · ',
        h('b', { testid: 'preview-used' }, fmt(preview.used_tokens)),
        ` of ${fmt(budget)} tokens (trigger ${fmt(trigger)})`,
        preview.needs_compaction ? ' · needs compaction' : '',
      ),
      h(
        'p',
        { class: 'mono small' },
        `${policy.strategy} ${compactJson(policy.config ?? {})} · ${preview.config.tokenizer}`,
      ),
      h(
        'dl',
        { class: 'preview-facts' },
        h('dt', {}, 'dropped'),
        h(
          'dd',
          { class: 'mono', testid: 'preview-dropped' },
          preview.dropped.length
            ? preview.dropped
                .map((run) => `${seqRange(run.from_seq, run.to_seq)} (${run.count})`)
                .join(', ')
            : 'none',
        ),
        h('dt', {}, 'changed'),
        h(
          'dd',
          { class: 'mono', testid: 'preview-changed' },
          preview.changed.length ? seqRuns(preview.changed) : 'none',
        ),
        h('dt', {}, 'refused'),
        h(
          'dd',
          { class: 'mono', testid: 'preview-refused' },
          preview.refused.length
            ? preview.refused.map((item) => `#${item.seq} ${item.code}`).join(', ')
            : 'none',
        ),
        h('dt', {}, 'vs. now'),
        h(
          'dd',
          { class: 'mono', testid: 'preview-diff' },
          gained.length || lost.length
            ? [
                gained.length ? `would add ${seqRuns(gained)}` : '',
                lost.length ? `would drop ${seqRuns(lost)}` : '',
              ]
                .filter(Boolean)
                .join('; ')
            : 'the same messages as the current window',
        ),
      ),
      h(
        'div',
        { class: 'scroll preview-list' },
        preview.messages.map((message, index) => {
          const element = messageView(
            { ...message, token_count: tokens.get(index) ?? message.token_count },
            'preview-message',
            message.seq !== null && !now.has(message.seq)
              ? h('span', { class: 'chip added' }, 'not in the window now')
              : null,
          );
          return element;
        }),
      ),
    );
  }
}

setupKeyForm();
window.addEventListener('hashchange', route);
route();
