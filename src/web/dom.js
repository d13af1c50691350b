// Builds DOM from data without ever parsing it as HTML: tenant data (samples, SQL, errors) is hostile input.

/**
 * h('td', { className: 'x', dataset: { step: '1' } }, 'text', otherNode): strings become text nodes;
 * attributes are set as properties, and on* handlers only when given as functions.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'className' || name === 'value' || name === 'checked' || name === 'disabled' || name === 'type') element[name] = value;
    else element.setAttribute(name, String(value));
  }
  append(element, ...children);
  return element;
}

export function append(parent, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

/** A cell's text: strings as they are, everything else as JSON. */
export function cellText(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Records (objects) as a table, columns in the order they first appear. */
export function recordsTable(records, columnNames) {
  const rows = Array.isArray(records) ? records : [];
  const names = columnNames && columnNames.length > 0 ? columnNames : [...new Set(rows.flatMap((row) => (row && typeof row === 'object' ? Object.keys(row) : ['value'])))];
  return h(
    'table',
    { className: 'sample' },
    h('thead', {}, h('tr', {}, names.map((name) => h('th', {}, name)))),
    h(
      'tbody',
      {},
      rows.map((row) => h('tr', {}, names.map((name) => h('td', {}, cellText(row && typeof row === 'object' ? row[name] : row))))),
    ),
  );
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function statusBadge(status, props = {}) {
  return h('span', { ...props, className: `status status-${String(status).toLowerCase()} ${props.className ?? ''}`.trim() }, status);
}

/** Replaces an element's children with these (strings as text, null and false left out, arrays flattened). */
export function fill(element, ...children) {
  return append(clear(element), ...children);
}
