// Status: the caller's queues, recent failures (with retry), the pipeline's
// stages and limits, the inference service and totals (GET /api/v1/status).
// Refreshed by server push while it is open.

import { api } from './api.js';
import { h, clear, bytes, toast } from './util.js';
import { subscribe } from './events.js';

const STATES = ['available', 'scheduled', 'pending', 'running', 'retryable', 'completed', 'discarded', 'cancelled'];

export function statusView() {
  const body = h('div.status-body');
  const refresh = h('button.secondary', { type: 'button' }, 'Refresh');
  const el = h('section.view.status', { 'aria-label': 'Status', hidden: true },
    h('div.toolbar', h('h1', 'Status'), h('span.spacer'), refresh), body);
  let timer = 0, token = 0;
  refresh.addEventListener('click', () => load());

  subscribe((type) => {
    if (el.hidden || type === 'down') return;
    clearTimeout(timer);
    timer = setTimeout(load, 400);
  });

  async function load() {
    const mine = ++token;
    let s;
    try {
      s = await api('/api/v1/status');
    } catch (e) {
      if (mine === token) clear(body).append(h('p.error', { role: 'alert' }, e.message));
      return;
    }
    if (mine !== token) return;
    render(s);
  }

  function render(s) {
    const t = s.totals;
    const queues = h('table.queues', { 'data-testid': 'queues' },
      h('thead', h('tr', h('th', 'queue'), STATES.map((st) => h('th', st)))),
      h('tbody', Object.entries(s.queues).map(([kind, counts]) =>
        h('tr', { 'data-queue': kind }, h('th', kind),
          STATES.map((st) => h('td', { 'data-state': st, class: counts[st] ? 'nonzero' : null }, String(counts[st] || 0)))))));
    const failures = s.failures.length
      ? h('ul.failures', s.failures.map((f) => {
        const retry = h('button.secondary.small', { type: 'button', 'data-action': 'retry' }, 'Retry');
        retry.addEventListener('click', async () => {
          retry.disabled = true;
          try {
            await api(`/api/v1/assets/${f.asset_id}/reprocess`, { method: 'POST' });
            toast(`Queued ${f.file_name} again`);
            load();
          } catch (e) { toast(e.message, 'error'); retry.disabled = false; }
        });
        return h('li', { 'data-asset': f.asset_id },
          h('a', { href: `#/photo/${f.asset_id}` }, f.file_name),
          h(`span.state.${f.state}`, f.state), h('span.kind', f.kind),
          h('time', new Date(f.at).toLocaleString()),
          h('p.error-text', f.error || '(no message)'), retry);
      }))
      : h('p.muted', 'No failures.');
    const inf = s.inference;
    const inference = h('dl.inference',
      h('dt', 'Service'), h('dd', inf.configured ? `${inf.service_name || '?'} at ${inf.addr}` : 'not configured'),
      h('dt', 'Status'), h('dd', { 'data-testid': 'inference-status' }, inf.reachable ? 'reachable' : `unreachable${inf.error ? `: ${inf.error}` : ''}`),
      inf.models ? [h('dt', 'Models'), h('dd', inf.models.join(', '))] : null,
      inf.runtime ? [h('dt', 'Runtime'), h('dd', inf.runtime)] : null,
      h('dt', 'Text search'), h('dd', inf.semantic === false ? 'not semantic (matches colour words only)' : inf.semantic === true ? 'semantic' : 'unknown'));
    const stages = h('table.pipeline',
      h('thead', h('tr', h('th', '#'), h('th', 'stage'), h('th', 'timeout'), h('th', 'memory'), h('th', 'content types'), h('th', 'grants'))),
      h('tbody', s.pipeline.map((st, i) => h('tr',
        h('td', String(i + 1)), h('td', st.name), h('td', `${st.timeout_ms} ms`), h('td', `${st.memory_limit_mb} MiB`),
        h('td', st.content_types.length ? st.content_types.join(', ') : 'all'),
        h('td', [...st.read_only_dirs, ...st.env].join(', ') || 'none')))));
    clear(body).append(
      h('section.card', h('h2', 'Totals'),
        h('dl.totals', { 'data-testid': 'totals' },
          h('dt', 'Assets'), h('dd', { 'data-total': 'assets' }, String(t.assets)),
          h('dt', 'Stored'), h('dd', `${bytes(t.original_bytes)} originals + ${bytes(t.rendition_bytes)} renditions`),
          h('dt', 'By status'), h('dd', `${t.ready} ready · ${t.processing} processing · ${t.rejected} rejected · ${t.failed} failed`),
          h('dt', 'With CLIP embedding'), h('dd', String(t.embedded)))),
      h('section.card.wide', h('h2', 'Queues'), h('div.scroll-x', queues)),
      h('section.card', h('h2', 'Recent failures'), failures),
      h('section.card', h('h2', 'Inference service'), inference),
      h('section.card.wide', h('h2', 'Pipeline'), h('div.scroll-x', stages)));
  }

  return {
    el,
    show() { el.hidden = false; load(); },
    hide() { el.hidden = true; token++; },
  };
}
