// Server push: reads GET /api/v1/events (Server-Sent Events fed by Postgres
// LISTEN/NOTIFY) with fetch() and a stream reader, because EventSource cannot
// send the Authorization header. Reconnects with backoff; the server then
// says `ready`, and subscribers refresh what they show.

import { authHeaders, session } from './api.js';

const subscribers = new Set();
let controller = null;
let retry = 0;
export const pushState = { connected: false };

/** f(type, data) for every event: 'ready', 'resync', 'asset' ({op, asset_id, status}), 'down'. */
export function subscribe(f) {
  subscribers.add(f);
  return () => subscribers.delete(f);
}

function emit(type, data) {
  for (const f of subscribers) {
    try { f(type, data); } catch (e) { console.warn('event handler failed', e); }
  }
}

export function start() {
  stop();
  controller = new AbortController();
  run(controller.signal);
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
  pushState.connected = false;
}

async function run(signal) {
  while (!signal.aborted && session.key) {
    try {
      const res = await fetch('/api/v1/events', { headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal });
      if (res.status === 401) { emit('unauthorized', {}); return; }
      if (!res.ok || !res.body) throw new Error(`events: ${res.status}`);
      retry = 0;
      await read(res.body.getReader(), signal);
    } catch (e) {
      if (signal.aborted) return;
    }
    pushState.connected = false;
    emit('down', {});
    retry = Math.min(retry + 1, 6);
    await new Promise((r) => setTimeout(r, 500 * 2 ** retry));
  }
}

async function read(reader, signal) {
  const decoder = new TextDecoder();
  let buf = '';
  let type = 'message', data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done || signal.aborted) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (data.length) dispatch(type, data.join('\n'));
        type = 'message'; data = [];
      } else if (line.startsWith(':')) {
        // keep-alive comment
      } else {
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
      }
    }
  }
}

function dispatch(type, raw) {
  let data = {};
  try { data = JSON.parse(raw); } catch { /* keep {} */ }
  if (type === 'ready') pushState.connected = true;
  emit(type, data);
}
