// Search: text (POST /api/v1/search, CLIP) or filters alone (the asset list's
// query parameters), and "similar to this" (GET /api/v1/assets/{id}/similar).
// It tells the truth: when the inference service says its text search is not
// semantic, the page says so, and photos the query says nothing about are
// not shown as ranked matches.

import { api } from './api.js';
import { h, clear, toast } from './util.js';
import { thumbInto, badge } from './timeline.js';

const TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/heic', 'image/avif'];

function nextDay(d) {
  const t = new Date(d + 'T00:00:00Z');
  t.setUTCDate(t.getUTCDate() + 1);
  return t.toISOString().slice(0, 10);
}

export function searchView({ navigate }) {
  const field = (name, attrs = {}) => h('input', { name, id: `f-${name}`, ...attrs });
  const select = (name, options) => h('select', { name, id: `f-${name}` },
    options.map(([v, label]) => h('option', { value: v }, label)));
  const form = h('form.search-form', { role: 'search' },
    h('div.q-row',
      h('label.visually-hidden', { for: 'f-q' }, 'Search text'),
      field('q', { type: 'search', placeholder: 'Search your photos, e.g. “blue sky”', autocomplete: 'off' }),
      h('button', { type: 'submit' }, 'Search')),
    h('div.filters',
      h('label', 'From ', field('from', { type: 'date' })),
      h('label', 'To ', field('to', { type: 'date' })),
      h('label', 'Make ', field('make', { type: 'text', placeholder: 'Canon', size: 10 })),
      h('label', 'Model ', field('model', { type: 'text', placeholder: '40D', size: 10 })),
      h('label', 'Type ', select('type', [['', 'any'], ...TYPES.map((t) => [t, t.split('/')[1].toUpperCase()])])),
      h('label', 'Status ', select('status', [['', 'any'], ['ready', 'ready'], ['processing', 'processing'], ['rejected', 'rejected'], ['failed', 'failed']])),
      h('label', 'Location ', select('loc', [['', 'any'], ['yes', 'with GPS'], ['no', 'without GPS']])),
      h('label', 'Place ', field('place', { type: 'text', placeholder: 'Arezzo', size: 10, title: 'a city, region or country, e.g. Arezzo, Tuscany, Italy or IT' })),
      h('button.secondary', { type: 'reset' }, 'Clear')));
  const notice = h('div.notice', { role: 'note', hidden: true, 'data-testid': 'search-notice' });
  const summary = h('p.summary', { role: 'status' });
  const results = h('div.results');
  const more = h('button.secondary', { type: 'button', hidden: true }, 'Load more');
  const el = h('section.view.search', { 'aria-label': 'Search', hidden: true },
    h('div.toolbar', h('h1', 'Search')), form, notice, summary, results, more);

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    navigate(`#/search?${p}`);
  });
  form.addEventListener('reset', () => setTimeout(() => navigate('#/search'), 0));

  let token = 0, loadMore = null;
  more.addEventListener('click', () => loadMore && loadMore());

  function filters(p) {
    const f = {};
    if (p.get('from')) f.taken_from = `${p.get('from')}T00:00:00`;
    if (p.get('to')) f.taken_to = `${nextDay(p.get('to'))}T00:00:00`;
    if (p.get('make')) f.make = p.get('make');
    if (p.get('model')) f.model = p.get('model');
    if (p.get('type')) f.content_type = p.get('type');
    if (p.get('status')) f.status = p.get('status');
    if (p.get('loc')) f.has_location = p.get('loc') === 'yes';
    if (p.get('place')) f.place = p.get('place');
    return f;
  }

  function card(r, ranked) {
    const t = h('a.tile.result', { href: `#/photo/${r.asset_id}`, 'data-id': r.asset_id, title: r.file_name });
    thumbInto(t, r.renditions ? r : { ...r, status: 'ready', renditions: ['small'] });
    const b = r.status ? badge(r) : null;
    if (b) t.append(b);
    if (ranked) t.append(h('span.distance', { title: 'cosine distance: smaller is closer' }, r.distance.toFixed(3)));
    return t;
  }

  async function run(p) {
    const mine = ++token;
    clear(results);
    notice.hidden = true;
    more.hidden = true;
    summary.textContent = 'Searching…';
    for (const [k, v] of p) if (form.elements[k]) form.elements[k].value = v;
    const f = filters(p);
    try {
      if (p.get('similar')) {
        const id = p.get('similar');
        let cursor = null;
        const page = async () => {
          const c = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
          const r = await api(`/api/v1/assets/${id}/similar?limit=60${c}`);
          if (mine !== token) return;
          r.results.forEach((x) => results.append(card(x, true)));
          cursor = r.next_cursor; more.hidden = !cursor;
          summary.textContent = `${results.children.length} photos, most similar first`;
        };
        loadMore = page;
        await page();
      } else if (p.get('q')) {
        let cursor = null;
        const page = async () => {
          const r = await api('/api/v1/search', { method: 'POST', json: { query: p.get('q'), limit: 60, cursor, ...f } });
          if (mine !== token) return;
          if (r.semantic === false || r.notice) {
            notice.hidden = false;
            notice.dataset.semantic = String(r.semantic);
            notice.textContent = r.notice || 'The inference service’s search is not semantic.';
          }
          r.results.forEach((x) => results.append(card(x, true)));
          cursor = r.next_cursor; more.hidden = !cursor;
          const n = results.children.length;
          summary.textContent = n
            ? `${n} photo${n === 1 ? '' : 's'} ranked by closeness to “${p.get('q')}”${r.unranked ? `; ${r.unranked} more say nothing about it and are left out` : ''}`
            : `No photo matches “${p.get('q')}”.`;
        };
        loadMore = page;
        await page();
      } else if ([...p.keys()].length) {
        let cursor = null;
        const q = new URLSearchParams({ order: 'taken', limit: '100' });
        for (const [k, v] of Object.entries(f)) q.set(k, String(v));
        const page = async () => {
          if (cursor) q.set('cursor', cursor);
          const r = await api(`/api/v1/assets?${q}`);
          if (mine !== token) return;
          r.assets.forEach((x) => results.append(card(x, false)));
          cursor = r.next_cursor; more.hidden = !cursor;
          const n = results.children.length;
          summary.textContent = `${n}${cursor ? '+' : ''} photo${n === 1 ? '' : 's'} match the filters, newest first`;
        };
        loadMore = page;
        await page();
      } else {
        summary.textContent = 'Type words to search by content, or set filters to narrow the library.';
      }
    } catch (e) {
      if (mine !== token) return;
      summary.textContent = '';
      notice.hidden = false;
      notice.textContent = e.code === 'search_unavailable' || e.code === 'inference_unavailable'
        ? `Text search is unavailable: ${e.message}` : e.message;
      if (e.status >= 500) toast(e.message, 'error');
    }
  }

  return {
    el,
    show(params) {
      el.hidden = false;
      for (const k of ['q', 'from', 'to', 'make', 'model', 'type', 'status', 'loc', 'place']) form.elements[k].value = '';
      run(params);
    },
    hide() { el.hidden = true; token++; },
  };
}
