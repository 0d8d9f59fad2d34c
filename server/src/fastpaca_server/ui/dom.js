// DOM helpers. Text from the API only ever reaches the page as text nodes or attribute
// values set here: nothing the API sends is ever parsed as HTML (no HTML-string sinks).

const numbers = new Intl.NumberFormat('en-US');

/**
 * Create an element. `attrs`: `class`, `testid` (data-testid), `dataset` (data-*),
 * `on<event>` listeners, `hidden`/`open`/`disabled` as booleans, others as attributes.
 * Children: nodes, strings (as text), arrays of them; null/false/undefined are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name === 'testid') element.dataset.testid = value;
    else if (name === 'dataset') {
      for (const [key, item] of Object.entries(value)) element.dataset[key] = String(item);
    } else if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** A whole number with thousands separators ("1,000"). */
export function fmt(value) {
  return typeof value === 'number' ? numbers.format(value) : String(value);
}

/** Tokens at a ratio of a budget, as the server compares them (up to two decimals shown). */
export function tokensAt(ratio, budget) {
  return Math.round(ratio * budget * 100) / 100;
}

/** Compact JSON of any value (for parts other than text, metadata, configs). */
export function compactJson(value) {
  return JSON.stringify(value) ?? 'null';
}

/** `#3`, or `#3–#9` for a run. */
export function seqRange(from, to) {
  return from === to ? `#${from}` : `#${from}–#${to}`;
}

/** Seqs as runs: [1,2,3,7] → "#1–#3, #7". */
export function seqRuns(seqs) {
  const sorted = [...seqs].sort((a, b) => a - b);
  const runs = [];
  for (const seq of sorted) {
    const last = runs[runs.length - 1];
    if (last && seq === last[1] + 1) last[1] = seq;
    else runs.push([seq, seq]);
  }
  return runs.map(([from, to]) => seqRange(from, to)).join(', ');
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function timeAgo(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** The local time of a timestamp (HH:MM:SS), or the text as given if it is not one. */
export function clock(iso) {
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return String(iso);
  return then.toLocaleTimeString('en-GB', { hour12: false });
}

/** A `<time>` element: relative or clock text, the exact timestamp on hover. */
export function timeElement(iso, relative = false) {
  return h('time', { datetime: iso, title: iso }, relative ? timeAgo(iso) : clock(iso));
}
