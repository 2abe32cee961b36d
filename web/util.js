// Small helpers: DOM building, formatting, a confirmation dialog.

/** h('div.cls#id', {attrs}, ...children): an element. */
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  for (const r of rest) {
    if (r[0] === '.') el.classList.add(r.slice(1));
    else el.id = r.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

const MONTH = new Intl.DateTimeFormat(undefined, { month: 'long', year: 'numeric', timeZone: 'UTC' });
const DAY = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', timeZone: 'UTC' });
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium', timeZone: 'UTC' });

/** A wall-clock key `YYYY-MM-DDTHH:MM:SS...` read as UTC, so it prints as written. */
function asDate(key) {
  return new Date(key.slice(0, 19) + 'Z');
}
export const monthLabel = (key) => MONTH.format(asDate(key));
export const dayLabel = (key) => DAY.format(asDate(key));
export const fullDate = (key) => FULL.format(asDate(key));

/** The timeline's sort key, as the server's: taken_at (wall clock), else the upload time in UTC. */
export function sortKey(a) {
  if (a.taken_at) return a.taken_at.length === 19 ? a.taken_at + '.000000' : a.taken_at;
  return new Date(a.created_at).toISOString().replace('Z', '').padEnd(26, '0');
}

/** Newest first, ids descending on ties (the server's order). */
export function compareAssets(a, b) {
  const ka = sortKey(a), kb = sortKey(b);
  if (ka !== kb) return ka < kb ? 1 : -1;
  return a.asset_id < b.asset_id ? 1 : a.asset_id > b.asset_id ? -1 : 0;
}

/** A modal yes/no question; resolves true on yes. */
export function confirmDialog(question, yes = 'Delete') {
  return new Promise((resolve) => {
    const dlg = h('dialog.confirm', { 'aria-label': question },
      h('p', question),
      h('div.actions',
        h('button.secondary', { type: 'button', onclick: () => dlg.close('no') }, 'Cancel'),
        h('button.danger', { type: 'button', onclick: () => dlg.close('yes'), 'data-confirm': 'yes' }, yes)));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'yes'); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** A short message at the bottom of the screen. */
export function toast(text, kind = 'info') {
  const t = h(`div.toast.${kind}`, { role: 'status' }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}
