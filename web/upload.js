// Uploads: drop files or folders anywhere, or pick them; a few go at once,
// each with its own progress bar (XMLHttpRequest reports upload progress,
// fetch does not) and an overall bar. Each file ends as new (the pipeline
// made it ready), duplicate, or rejected/failed with the server's reason.
// Accepted files wait for their status through server push.

import { authHeaders, api } from './api.js';
import { h, bytes } from './util.js';
import { subscribe } from './events.js';

const PARALLEL = 3;
const AUTO_RETRIES = 2;
const items = [];
const waiting = new Map(); // asset id -> item waiting for the pipeline
const settled = new Set(); // asset ids whose end arrived by push before their upload's answer
let active = 0;

const list = h('ol.uploads', { 'aria-label': 'Uploads' });
const overallBar = h('progress.overall', { max: 1, value: 0, 'aria-label': 'Overall upload progress' });
const overallText = h('span.overall-text');
const picker = h('input', { type: 'file', multiple: true, hidden: true, 'data-testid': 'file-input',
  accept: 'image/*,.heic,.heif,.avif,.tif,.tiff,.xmp' });
const folderPicker = h('input', { type: 'file', multiple: true, hidden: true, webkitdirectory: true, 'data-testid': 'folder-input' });
const clearBtn = h('button.secondary', { type: 'button', onclick: clearDone }, 'Clear finished');
export const panel = h('aside.upload-panel', { hidden: true, 'aria-label': 'Upload' },
  h('div.panel-head',
    h('h2', 'Upload'),
    h('span.spacer'),
    h('button.secondary', { type: 'button', 'aria-label': 'Close upload panel', onclick: () => { panel.hidden = true; } }, '×')),
  h('div.pick',
    h('button', { type: 'button', onclick: () => picker.click() }, 'Choose files'),
    h('button.secondary', { type: 'button', onclick: () => folderPicker.click() }, 'Choose a folder'),
    h('span.hint', 'or drop files anywhere')),
  picker, folderPicker,
  h('div.overall-row', overallBar, overallText),
  list, clearBtn);

for (const p of [picker, folderPicker]) {
  p.addEventListener('change', () => { addFiles([...p.files]); p.value = ''; });
}

function clearDone() {
  for (const it of [...items]) {
    if (it.final) { it.el.remove(); items.splice(items.indexOf(it), 1); }
  }
  overall();
}

function overall() {
  const total = items.reduce((s, it) => s + it.file.size, 0) || 1;
  const sent = items.reduce((s, it) => s + (it.final || it.state === 'processing' ? it.file.size : it.loaded), 0);
  overallBar.value = sent / total;
  const done = items.filter((it) => it.final).length;
  overallText.textContent = items.length ? `${done} of ${items.length} done · ${bytes(sent)} of ${bytes(total)}` : '';
  panel.classList.toggle('busy', done < items.length);
}

const LABEL = {
  queued: 'waiting', sending: 'uploading', processing: 'processing…', new: 'new', duplicate: 'duplicate',
  rejected: 'rejected', failed: 'failed', error: 'network error',
};

function render(it) {
  it.el.dataset.state = it.state;
  it.status.textContent = LABEL[it.state] + (it.reason ? `: ${it.reason}` : '');
  it.bar.value = it.final || it.state === 'processing' ? 1 : it.file.size ? it.loaded / it.file.size : 0;
  it.retry.hidden = it.state !== 'error';
  overall();
}

export function addFiles(files) {
  const picked = files.filter((f) => !f.name.startsWith('.') && f.size >= 0);
  if (!picked.length) return;
  panel.hidden = false;
  for (const file of picked) {
    const it = { file, loaded: 0, state: 'queued', final: false, tries: 0 };
    it.bar = h('progress', { max: 1, value: 0, 'aria-label': `Progress of ${file.name}` });
    it.status = h('span.status');
    it.retry = h('button.secondary.small', { type: 'button', hidden: true, onclick: () => { it.tries = 0; enqueue(it); } }, 'Retry');
    it.el = h('li.upload', { 'data-name': file.webkitRelativePath || file.name },
      h('span.name', { title: file.webkitRelativePath || file.name }, file.webkitRelativePath || file.name),
      h('span.size', bytes(file.size)), it.bar, it.status, it.retry);
    list.append(it.el);
    items.push(it);
    enqueue(it);
  }
}

function enqueue(it) {
  it.state = 'queued'; it.loaded = 0; it.reason = null;
  render(it);
  it.queuedAt = performance.now();
  pump();
}

function pump() {
  while (active < PARALLEL) {
    const next = items.find((it) => it.state === 'queued');
    if (!next) return;
    active++;
    send(next).finally(() => { active--; pump(); });
  }
}

function send(it) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1/assets');
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (e) => { it.loaded = e.loaded * (it.file.size / (e.total || 1)); render(it); };
    it.state = 'sending';
    render(it);
    xhr.onload = () => {
      const body = xhr.response || {};
      if (xhr.status === 201 || xhr.status === 200) {
        if (body.status === 'duplicate') {
          finish(it, 'duplicate', 'you already have this file');
          it.assetId = body.asset_id;
        } else {
          it.assetId = body.asset_id;
          it.state = 'processing';
          render(it);
          waiting.set(body.asset_id, it);
          if (settled.has(body.asset_id)) check(it);
          // Push says when it is done; one look later covers a missed event.
          setTimeout(() => { if (!it.final) check(it); }, 30000);
        }
      } else if (xhr.status >= 500 || xhr.status === 0) {
        retryLater(it, body.error ? body.error.message : `server error ${xhr.status}`);
      } else {
        finish(it, 'rejected', body.error ? body.error.message : `HTTP ${xhr.status}`);
      }
      resolve();
    };
    xhr.onerror = () => { retryLater(it, 'the connection failed'); resolve(); };
    const form = new FormData();
    form.append('file', it.file, it.file.name);
    xhr.send(form);
  });
}

function retryLater(it, reason) {
  if (it.tries < AUTO_RETRIES) {
    it.tries++;
    it.state = 'queued';
    it.reason = `${reason}; retrying`;
    render(it);
    setTimeout(() => enqueue(it), 1000 * 2 ** it.tries);
  } else {
    it.state = 'error';
    it.reason = reason;
    render(it);
  }
}

function finish(it, state, reason) {
  it.state = state;
  it.reason = reason || null;
  it.final = true;
  waiting.delete(it.assetId);
  render(it);
}

async function check(it) {
  try {
    const a = await api(`/api/v1/assets/${it.assetId}`);
    settle(it, a);
  } catch (e) {
    if (e.status === 404) finish(it, 'rejected', 'the asset was deleted');
  }
}

function settle(it, a) {
  if (a.status === 'ready') finish(it, 'new', null);
  else if (a.status === 'rejected' || a.status === 'failed') finish(it, a.status, a.reason);
}

subscribe((type, data) => {
  if (type === 'asset' && data.status !== 'processing' && !waiting.has(data.asset_id)) {
    settled.add(data.asset_id);
    if (settled.size > 1000) settled.delete(settled.values().next().value);
  }
  if (type === 'asset' && waiting.has(data.asset_id) && data.status !== 'processing') {
    const it = waiting.get(data.asset_id);
    if (data.status === 'ready') finish(it, 'new', null);
    else check(it); // fetch the reason
  } else if (type === 'ready' || type === 'resync') {
    for (const it of waiting.values()) check(it);
  }
});

// Drop anywhere: files, and folders through webkitGetAsEntry.
let depth = 0;
export function installDrop(overlay) {
  window.addEventListener('dragenter', (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    depth++;
    overlay.hidden = false;
  });
  window.addEventListener('dragleave', () => { if (--depth <= 0) { depth = 0; overlay.hidden = true; } });
  window.addEventListener('dragover', (e) => { e.preventDefault(); });
  window.addEventListener('drop', async (e) => {
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const entries = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) addFiles(await walk(entries));
    else addFiles([...e.dataTransfer.files]);
  });
}

async function walk(entries) {
  const out = [];
  for (const entry of entries) {
    if (entry.isFile) out.push(await new Promise((res, rej) => entry.file(res, rej)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      let batch;
      do {
        batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        out.push(...(await walk(batch)));
      } while (batch.length);
    }
  }
  return out;
}

/** Pending files, for the header's indicator. */
export function busy() { return items.some((it) => !it.final); }
