// The library: the user's assets newest first by when they were taken, in
// day groups under month headings. The list arrives a page at a time from
// GET /api/v1/assets?order=taken (cursor paging) and stays current through
// server push. Only the rows near the viewport are in the DOM, so 10,000
// assets scroll like 10.

import { api, rendition, forgetRenditions } from './api.js';
import { h, clear, monthLabel, dayLabel, sortKey, compareAssets, confirmDialog, toast } from './util.js';
import { subscribe } from './events.js';

const PAGE = 200;

function normalise(a) {
  const r = a.renditions || [];
  return { ...a, renditions: r.map((x) => (typeof x === 'string' ? x : x.name)) };
}

/** The loaded part of the library, in server order, shared by every view. */
export const library = {
  items: [],
  byId: new Map(),
  cursor: undefined, // undefined: nothing loaded; null: everything loaded
  loading: null,
  listeners: new Set(),

  changed() { for (const f of this.listeners) f(); },
  indexOf(id) { return this.items.findIndex((a) => a.asset_id === id); },
  get complete() { return this.cursor === null; },

  async loadMore() {
    if (this.loading || this.cursor === null) return this.loading;
    const c = this.cursor ? `&cursor=${encodeURIComponent(this.cursor)}` : '';
    this.loading = api(`/api/v1/assets?order=taken&limit=${PAGE}${c}`).then((page) => {
      // The next page sorts after everything loaded: put() must take it.
      for (const a of page.assets) this.put(normalise(a), false, true);
      this.cursor = page.next_cursor || null;
    }).finally(() => { this.loading = null; this.changed(); });
    return this.loading;
  },

  /** After missed events: reload the first page and merge it. */
  async refreshHead() {
    const page = await api(`/api/v1/assets?order=taken&limit=${PAGE}`);
    const seen = new Set(page.assets.map((a) => a.asset_id));
    for (const a of page.assets) this.put(normalise(a), false);
    // Anything loaded that sorts inside this page but is not in it is gone.
    if (page.assets.length) {
      const last = page.assets[page.assets.length - 1];
      for (const a of [...this.items]) {
        if (!seen.has(a.asset_id) && compareAssets(a, last) <= 0) this.drop(a.asset_id, false);
      }
    } else {
      for (const a of [...this.items]) this.drop(a.asset_id, false);
    }
    if (this.cursor === undefined) this.cursor = page.next_cursor || null;
    this.changed();
  },

  /** Inserts or replaces an asset at its place (unless it sorts past what is
   * loaded and is not from the next page: a later page will bring it). */
  put(a, notify = true, paged = false) {
    const old = this.byId.get(a.asset_id);
    if (old) {
      const i = this.items.indexOf(old);
      this.items.splice(i, 1);
    } else if (!paged && this.cursor && this.items.length && compareAssets(a, this.items[this.items.length - 1]) > 0) {
      return; // a later page will bring it
    }
    let lo = 0, hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareAssets(this.items[mid], a) < 0) lo = mid + 1; else hi = mid;
    }
    this.items.splice(lo, 0, a);
    this.byId.set(a.asset_id, a);
    if (notify) this.changed();
  },

  drop(id, notify = true) {
    const old = this.byId.get(id);
    if (!old) return;
    this.items.splice(this.items.indexOf(old), 1);
    this.byId.delete(id);
    forgetRenditions(id);
    if (notify) this.changed();
  },

  async fetchOne(id) {
    try {
      const a = normalise(await api(`/api/v1/assets/${id}`));
      this.put(a);
      return a;
    } catch (e) {
      if (e.status === 404) this.drop(id);
      return null;
    }
  },

  reset() {
    this.items = []; this.byId = new Map(); this.cursor = undefined; this.loading = null;
  },
};

/** Bring the library up to date as the server reports changes. */
export function followEvents() {
  subscribe((type, data) => {
    if (type === 'asset') {
      if (data.op === 'delete') library.drop(data.asset_id);
      else library.fetchOne(data.asset_id);
    } else if (type === 'ready' || type === 'resync') {
      if (library.cursor !== undefined) library.refreshHead().catch(() => {});
    }
  });
}

const GAP = 4;
const MONTH_H = 48;
const DAY_H = 32;

export function thumbInto(el, a, name = 'small') {
  const names = a.renditions || [];
  if (a.status === 'ready' && names.includes(name)) {
    const img = h('img', { alt: a.file_name, decoding: 'async', draggable: 'false' });
    // A file that does not decode shows the placeholder, not a broken image.
    img.addEventListener('error', () => { img.remove(); el.append(placeholder(a)); }, { once: true });
    el.append(img);
    rendition(a.asset_id, name, () => img.isConnected).then((url) => { img.src = url; }).catch((e) => {
      if (e.name !== 'AbortError') { img.remove(); el.append(placeholder(a)); }
    });
  } else {
    el.append(placeholder(a));
  }
}

function placeholder(a) {
  const type = (a.content_type || '').split('/').pop().toUpperCase() || 'FILE';
  return h('div.placeholder', h('b', type), h('span', a.file_name));
}

export function badge(a) {
  if (a.status === 'ready') return null;
  return h(`div.badge.${a.status}`, { title: a.reason || a.status },
    h('b', a.status), a.reason ? h('span.reason', a.reason) : null);
}

export function libraryView() {
  const selected = new Set();
  let selecting = false;
  const count = h('span.count');
  const selectBtn = h('button.secondary', { type: 'button', 'data-action': 'select' }, 'Select');
  const deleteBtn = h('button.danger', { type: 'button', 'data-action': 'delete-selected', hidden: true }, 'Delete');
  const canvas = h('div.canvas', { role: 'grid', 'aria-label': 'Photos' });
  const scroller = h('div.scroller', canvas);
  const empty = h('div.empty', { hidden: true },
    h('p', 'No photos yet.'), h('p', 'Drop photos anywhere on this page, or use Upload.'));
  const el = h('section.view.library', { 'aria-label': 'Library' },
    h('div.toolbar', h('h1', 'Library'), count, h('span.spacer'), deleteBtn, selectBtn),
    empty, scroller);

  let rows = [], total = 0, cols = 1, size = 100, width = 0, version = 0;
  const rendered = new Map();
  let firstScreen = false; // see watchFirstScreen

  function relayout() {
    width = scroller.clientWidth - 2 * GAP;
    if (width <= 0) return;
    cols = Math.max(3, Math.floor((width + GAP) / (width < 600 ? 112 : 180)));
    size = Math.floor((width - GAP * (cols - 1)) / cols);
    rows = [];
    let y = 0, month = null, day = null, cur = null;
    library.items.forEach((a, i) => {
      const k = sortKey(a);
      if (k.slice(0, 7) !== month) {
        month = k.slice(0, 7); day = null;
        rows.push({ kind: 'month', y, h: MONTH_H, label: monthLabel(k) }); y += MONTH_H;
      }
      if (k.slice(0, 10) !== day) {
        day = k.slice(0, 10); cur = null;
        rows.push({ kind: 'day', y, h: DAY_H, label: dayLabel(k) }); y += DAY_H;
      }
      if (!cur || cur.items.length === cols) {
        cur = { kind: 'tiles', y, h: size + GAP, items: [] }; rows.push(cur); y += size + GAP;
      }
      cur.items.push(i);
      a._row = rows.length - 1;
    });
    total = y + (library.complete ? 0 : 200);
    canvas.style.height = `${total}px`;
    version++;
    for (const n of rendered.values()) n.remove();
    rendered.clear();
    const n = library.items.length;
    count.textContent = n ? `${n}${library.complete ? '' : '+'} photo${n === 1 ? '' : 's'}` : '';
    empty.hidden = !(library.complete && n === 0);
    paint();
  }

  function tile(a) {
    const t = h('a.tile', {
      href: `#/photo/${a.asset_id}`, 'data-id': a.asset_id, role: 'gridcell',
      title: a.reason ? `${a.file_name}: ${a.reason}` : a.file_name,
      'aria-selected': selected.has(a.asset_id) ? 'true' : 'false',
    });
    t.style.width = t.style.height = `${size}px`;
    thumbInto(t, a);
    const b = badge(a);
    if (b) t.append(b);
    if (a.is_favorite) t.append(h('span.fav', { 'aria-label': 'favourite' }, '★'));
    t.append(h('span.check', { 'aria-hidden': 'true' }));
    return t;
  }

  function rowEl(r) {
    let n;
    if (r.kind === 'month') n = h('h2.month', r.label);
    else if (r.kind === 'day') n = h('h3.day', r.label);
    else {
      n = h('div.row', { role: 'row' });
      r.items.forEach((i, j) => {
        const t = tile(library.items[i]);
        t.style.left = `${j * (size + GAP)}px`;
        n.append(t);
      });
    }
    n.style.transform = `translateY(${r.y}px)`;
    n.style.height = `${r.h}px`;
    return n;
  }

  let frame = 0;
  function paint() {
    frame = 0;
    if (!rows.length && !library.items.length) { maybeLoad(); return; }
    const top = scroller.scrollTop, view = scroller.clientHeight || 800;
    const from = top - view, to = top + 2 * view;
    let lo = 0, hi = rows.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (rows[m].y + rows[m].h < from) lo = m + 1; else hi = m; }
    const want = new Set();
    for (let i = lo; i < rows.length && rows[i].y < to; i++) {
      const k = `${version}:${i}`;
      want.add(k);
      if (!rendered.has(k)) { const n = rowEl(rows[i]); rendered.set(k, n); canvas.append(n); }
    }
    for (const [k, n] of rendered) if (!want.has(k)) { n.remove(); rendered.delete(k); }
    if (!firstScreen && library.items.length) watchFirstScreen();
    maybeLoad();
  }

  // Marks `lumilio:first-screen` once per page load, when every tile in view
  // shows its thumbnail (or its placeholder): the time a user waits for the
  // library, which `make bench` reads through the Performance API.
  function watchFirstScreen() {
    firstScreen = true;
    const since = performance.now();
    const check = () => {
      const view = scroller.getBoundingClientRect();
      const waiting = [...canvas.querySelectorAll('.tile')].some((t) => {
        const r = t.getBoundingClientRect();
        if (r.bottom <= view.top || r.top >= view.bottom) return false;
        const img = t.querySelector('img');
        return img && img.isConnected && !(img.src && img.complete);
      });
      if (!waiting) performance.mark('lumilio:first-screen');
      else if (performance.now() - since < 30000) requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }

  function maybeLoad() {
    if (el.hidden || library.complete || library.loading) return;
    const top = scroller.scrollTop, view = scroller.clientHeight || 800;
    if (top + 3 * view >= total - 200) library.loadMore().catch((e) => toast(e.message, 'error'));
  }

  scroller.addEventListener('scroll', () => { if (!frame) frame = requestAnimationFrame(paint); }, { passive: true });
  // Deferred a frame: relayout changes sizes, which must not re-enter the observer.
  let resizing = 0;
  new ResizeObserver(() => {
    if (!resizing) resizing = requestAnimationFrame(() => { resizing = 0; if (scroller.clientWidth - 2 * GAP !== width) relayout(); });
  }).observe(scroller);
  library.listeners.add(() => { if (!el.hidden) relayout(); else stale = true; });
  let stale = false;

  function setSelecting(on) {
    selecting = on;
    if (!on) selected.clear();
    el.classList.toggle('selecting', on);
    selectBtn.textContent = on ? 'Cancel' : 'Select';
    updateSelection();
  }
  function updateSelection() {
    deleteBtn.hidden = !selected.size;
    deleteBtn.textContent = `Delete ${selected.size}`;
    for (const t of canvas.querySelectorAll('.tile')) {
      t.setAttribute('aria-selected', selected.has(t.dataset.id) ? 'true' : 'false');
    }
  }
  selectBtn.addEventListener('click', () => setSelecting(!selecting));
  deleteBtn.addEventListener('click', async () => {
    const ids = [...selected];
    if (!ids.length || !(await confirmDialog(`Delete ${ids.length} photo${ids.length === 1 ? '' : 's'}? This cannot be undone.`))) return;
    let failed = 0;
    for (const id of ids) {
      try { await api(`/api/v1/assets/${id}`, { method: 'DELETE' }); library.drop(id); } catch (e) { failed++; }
    }
    setSelecting(false);
    toast(failed ? `${failed} could not be deleted` : `Deleted ${ids.length}`, failed ? 'error' : 'info');
  });

  canvas.addEventListener('click', (e) => {
    const t = e.target.closest('.tile');
    if (!t) return;
    if (selecting || e.ctrlKey || e.metaKey || e.shiftKey) {
      e.preventDefault();
      if (!selecting) setSelecting(true);
      if (selected.has(t.dataset.id)) selected.delete(t.dataset.id); else selected.add(t.dataset.id);
      updateSelection();
    }
  });

  // Arrow keys move between tiles; Enter opens (it is a link); Space selects.
  canvas.addEventListener('keydown', (e) => {
    const t = e.target.closest('.tile');
    if (!t) return;
    if (e.key === ' ') {
      e.preventDefault();
      if (!selecting) setSelecting(true);
      if (selected.has(t.dataset.id)) selected.delete(t.dataset.id); else selected.add(t.dataset.id);
      updateSelection();
      return;
    }
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols }[e.key];
    if (!step) return;
    e.preventDefault();
    const i = library.indexOf(t.dataset.id) + step;
    if (i < 0 || i >= library.items.length) return;
    focusAsset(library.items[i].asset_id);
  });

  function focusAsset(id) {
    const a = library.byId.get(id);
    if (!a || a._row == null) return;
    const r = rows[a._row];
    if (r.y < scroller.scrollTop || r.y + r.h > scroller.scrollTop + scroller.clientHeight) {
      scroller.scrollTop = r.y - scroller.clientHeight / 3;
    }
    paint();
    const n = canvas.querySelector(`.tile[data-id="${id}"]`);
    if (n) n.focus();
  }

  return {
    el,
    show() {
      el.hidden = false;
      if (stale || !rows.length) { stale = false; relayout(); }
      if (library.cursor === undefined) library.loadMore().catch((e) => toast(e.message, 'error'));
    },
    hide() { el.hidden = true; },
    focusAsset,
    reset() { setSelecting(false); for (const n of rendered.values()) n.remove(); rendered.clear(); rows = []; scroller.scrollTop = 0; },
  };
}
