// One photo: the `large` rendition fitted to the screen, previous/next by
// arrow keys, buttons and swipe, an info panel, actions and similar photos.

import { api, blobUrl, forgetRenditions } from './api.js';
import { h, clear, bytes, fullDate, confirmDialog, toast } from './util.js';
import { library, thumbInto, badge } from './timeline.js';

const SOURCE = { metadata: 'from the file’s metadata', sidecar: 'from its XMP sidecar', file_time: 'from the file’s time (no date inside)' };

export function viewer({ close, go }) {
  const img = h('img.large', { alt: '' });
  const stage = h('div.stage', { tabindex: '-1' });
  const prev = h('button.nav.prev', { type: 'button', 'aria-label': 'Previous photo', 'data-action': 'prev' }, '‹');
  const next = h('button.nav.next', { type: 'button', 'aria-label': 'Next photo', 'data-action': 'next' }, '›');
  const info = h('aside.info', { 'aria-label': 'Photo information' });
  const el = h('div.viewer', { role: 'dialog', 'aria-modal': 'true', 'aria-label': 'Photo', hidden: true, tabindex: '-1' },
    h('div.stage-wrap', stage, prev, next,
      h('button.nav.close', { type: 'button', 'aria-label': 'Close', 'data-action': 'close', onclick: () => close() }, '×')),
    info);
  let current = null, url = null, token = 0;

  function neighbour(step) {
    if (!current) return null;
    const i = library.indexOf(current.asset_id);
    if (i < 0) return null;
    return library.items[i + step] || null;
  }
  async function move(step) {
    let n = neighbour(step);
    if (!n && step > 0 && !library.complete && library.indexOf(current.asset_id) >= 0) {
      await library.loadMore();
      n = neighbour(step);
    }
    if (n) go(n.asset_id);
  }
  prev.addEventListener('click', () => move(-1));
  next.addEventListener('click', () => move(1));

  el.addEventListener('keydown', (e) => {
    if (e.target.closest('input, textarea, select, dialog')) return;
    if (e.key === 'ArrowLeft') { e.preventDefault(); move(-1); }
    else if (e.key === 'ArrowRight') { e.preventDefault(); move(1); }
    else if (e.key === 'Escape') { e.preventDefault(); close(); }
  });
  let sx = null, sy = null;
  stage.addEventListener('pointerdown', (e) => { sx = e.clientX; sy = e.clientY; });
  stage.addEventListener('pointerup', (e) => {
    if (sx == null) return;
    const dx = e.clientX - sx, dy = e.clientY - sy;
    sx = null;
    if (Math.abs(dx) > 50 && Math.abs(dx) > 2 * Math.abs(dy)) move(dx < 0 ? 1 : -1);
  });
  stage.addEventListener('touchmove', (e) => { if (e.touches.length === 1) e.preventDefault(); }, { passive: false });

  function dropImage() {
    if (url) URL.revokeObjectURL(url);
    url = null;
    img.removeAttribute('src');
  }

  async function show(id) {
    const mine = ++token;
    el.hidden = false;
    dropImage();
    clear(stage);
    clear(info).append(h('p.muted', 'Loading…'));
    // Clearing the panel drops focus when it was on one of its buttons (Delete
    // moves on to the next photo); keys pressed while that one loads must
    // still reach the viewer.
    if (!el.contains(document.activeElement)) el.focus();
    let a;
    try {
      a = await api(`/api/v1/assets/${id}`);
    } catch (e) {
      if (mine !== token) return;
      current = null;
      prev.hidden = next.hidden = true;
      clear(info).append(h('h2', 'Not found'),
        h('p.error', { role: 'alert' }, e.status === 404 ? 'This photo does not exist, or it is not yours.' : e.message));
      stage.append(h('div.placeholder.big', h('b', '404'), h('span', 'No such photo')));
      stage.focus();
      return;
    }
    if (mine !== token) return;
    current = a;
    const names = (a.renditions || []).map((r) => r.name);
    const pick = ['large', 'medium', 'small'].find((n) => names.includes(n));
    if (pick && a.status === 'ready') {
      img.alt = a.file_name;
      stage.append(img);
      blobUrl(`/api/v1/assets/${a.asset_id}/renditions/${pick}`).then((u) => {
        if (mine !== token) { URL.revokeObjectURL(u); return; }
        url = u; img.src = u;
      }).catch(() => {});
    } else {
      const p = h('div.placeholder.big');
      thumbInto(p, { ...a, renditions: [] });
      stage.append(p.firstChild);
      const b = badge(a);
      if (b) stage.append(b);
    }
    prev.hidden = !neighbour(-1);
    next.hidden = !neighbour(1) && library.complete;
    renderInfo(a, mine);
    el.focus();
  }

  function row(label, ...value) {
    const v = value.filter((x) => x != null && x !== '');
    return v.length ? [h('dt', label), h('dd', ...v)] : [];
  }

  function renderInfo(a, mine) {
    const f = a.facts || {};
    const fav = h('button.secondary', { type: 'button', 'data-action': 'favorite', 'aria-pressed': a.is_favorite ? 'true' : 'false' },
      a.is_favorite ? '★ Favourite' : '☆ Favourite');
    fav.addEventListener('click', async () => {
      try {
        const r = await api(`/api/v1/assets/${a.asset_id}/favorite`, { method: 'POST', json: { favorite: !a.is_favorite } });
        a.is_favorite = r.is_favorite;
        fav.textContent = a.is_favorite ? '★ Favourite' : '☆ Favourite';
        fav.setAttribute('aria-pressed', String(a.is_favorite));
        const known = library.byId.get(a.asset_id);
        if (known) library.put({ ...known, is_favorite: a.is_favorite });
      } catch (e) { toast(e.message, 'error'); }
    });
    const download = h('button.secondary', { type: 'button', 'data-action': 'download' }, 'Download');
    download.addEventListener('click', async () => {
      try {
        const u = await blobUrl(`/api/v1/assets/${a.asset_id}/original`);
        const link = h('a', { href: u, download: a.file_name });
        document.body.append(link); link.click(); link.remove();
        setTimeout(() => URL.revokeObjectURL(u), 60000);
      } catch (e) { toast(e.message, 'error'); }
    });
    const reprocess = h('button.secondary', { type: 'button', 'data-action': 'reprocess' }, 'Reprocess');
    reprocess.addEventListener('click', async () => {
      try {
        await api(`/api/v1/assets/${a.asset_id}/reprocess`, { method: 'POST' });
        forgetRenditions(a.asset_id);
        toast('Queued for processing again');
        library.fetchOne(a.asset_id);
      } catch (e) { toast(e.message, 'error'); }
    });
    const del = h('button.danger', { type: 'button', 'data-action': 'delete' }, 'Delete');
    del.addEventListener('click', async () => {
      if (!(await confirmDialog(`Delete ${a.file_name}? This cannot be undone.`))) return;
      try {
        const after = neighbour(1) || neighbour(-1);
        await api(`/api/v1/assets/${a.asset_id}`, { method: 'DELETE' });
        library.drop(a.asset_id);
        toast(`Deleted ${a.file_name}`);
        if (after) go(after.asset_id, true); else close();
      } catch (e) { toast(e.message, 'error'); }
    });

    const exposure = [
      f.exposure_time != null ? (f.exposure_time < 1 ? `1/${Math.round(1 / f.exposure_time)} s` : `${f.exposure_time} s`) : null,
      f.f_number != null ? `f/${f.f_number}` : null,
      f.iso != null ? `ISO ${f.iso}` : null,
      f.focal_length != null ? `${f.focal_length} mm` : null,
    ].filter(Boolean).join(' · ');
    const lat = f.gps_latitude, lon = f.gps_longitude;
    const gps = lat != null && lon != null
      ? h('a', { href: `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`, target: '_blank', rel: 'noopener noreferrer', 'data-field': 'gps' },
        `${lat.toFixed(5)}, ${lon.toFixed(5)}`)
      : null;
    // The places stage's names; each links to the search for that place.
    const pl = a.place;
    const placeLink = (name) => h('a', { href: `#/search?place=${encodeURIComponent(name)}` }, name);
    const place = pl
      ? h('span', { 'data-field': 'place' },
        [pl.city, pl.region, pl.country].filter(Boolean).flatMap((n, i) => (i ? [', ', placeLink(n)] : [placeLink(n)])))
      : null;
    const stages = h('table.stages', h('thead', h('tr', h('th', 'stage'), h('th', 'outcome'), h('th', 'time'))),
      h('tbody', (a.stages || []).map((s) => [
        h('tr', { 'data-outcome': s.outcome }, h('td', s.stage), h('td', h(`span.outcome.${s.outcome}`, s.outcome)), h('td', `${Number(s.duration_ms).toFixed(1)} ms`)),
        s.error ? h('tr.detail', h('td', { colspan: 3 }, h('span.error', s.error))) : null,
        (s.warnings || []).length ? h('tr.detail', h('td', { colspan: 3 }, h('span.warn', 'warnings: ', s.warnings.join('; ')))) : null,
      ])));
    const labels = (a.predictions || []).map((p) => h('span.label', { title: `score ${p.score.toFixed(2)} (${p.source})` }, p.label));
    // A rule-based stage (plugins-py/tagger) stores its tags as one comma-separated `tags` fact.
    const tags = typeof f.tags === 'string' ? f.tags.split(',').map((t) => t.trim()).filter(Boolean) : [];
    const similar = h('div.similar', { 'aria-label': 'Similar photos' });

    clear(info).append(
      h('div.actions', fav, download, reprocess, del),
      h('h2.file-name', { 'data-field': 'file_name' }, a.file_name),
      a.status !== 'ready' ? h(`p.status.${a.status}`, { role: 'status' }, h('b', a.status), a.reason ? `: ${a.reason}` : '') : '',
      h('dl',
        row('Taken', a.taken_at ? h('span', { 'data-field': 'taken_at' }, fullDate(a.taken_at)) : 'unknown',
          a.taken_at_offset ? ` (UTC${a.taken_at_offset})` : a.taken_at ? ' (no offset recorded)' : null,
          a.taken_at_source ? h('small', ` ${SOURCE[a.taken_at_source] || a.taken_at_source}`) : null),
        row('Camera', [f.make, f.model].filter(Boolean).length ? h('span', { 'data-field': 'camera' }, [f.make, f.model].filter(Boolean).join(' ')) : null),
        row('Lens', f.lens),
        row('Exposure', exposure),
        row('Size', a.width ? `${a.width} × ${a.height} px · ` : '', bytes(a.size), ` · ${a.content_type}`),
        row('Place', place),
        row('Location', gps, f.gps_altitude != null ? ` · ${Math.round(f.gps_altitude)} m` : null),
        row('Tags', tags.length ? h('span.labels', { 'data-field': 'tags' }, tags.map((t) => h('span.label.tag', t))) : null),
        row('Labels', labels.length ? h('span.labels', labels) : null),
        row('Sidecar', a.sidecar ? `yes (${a.sidecar.file_name})` : 'no'),
        row('Uploaded', new Date(a.created_at).toLocaleString()),
      ),
      h('h3', 'Pipeline'), stages,
      h('h3', 'Similar photos ', h('a.small', { href: `#/search?similar=${a.asset_id}` }, 'similar to this →')),
      similar);

    if (!(a.predictions || []).length) {
      similar.append(h('p.muted', 'CLIP has not looked at this photo yet (or no inference service is configured).'));
      return;
    }
    api(`/api/v1/assets/${a.asset_id}/similar?limit=12`).then((page) => {
      if (mine !== token) return;
      if (!page.results.length) similar.append(h('p.muted', 'No other photos to compare with.'));
      for (const r of page.results) {
        const t = h('a.thumb', { href: `#/photo/${r.asset_id}`, title: `${r.file_name} · distance ${r.distance.toFixed(3)}` });
        thumbInto(t, { ...r, status: 'ready', renditions: ['small'] });
        similar.append(t);
      }
    }).catch((e) => similar.append(h('p.muted', e.message)));
  }

  return {
    el,
    show,
    hide() { token++; el.hidden = true; dropImage(); current = null; },
    get current() { return current; },
  };
}
