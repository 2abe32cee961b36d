// Talking to the host: every call sends the API key as `Authorization: Bearer`.
// Renditions and originals need the key too, so they are fetched here and
// shown through blob: URLs (an <img src> cannot send a header, and a key in
// a URL would end up in logs and history).

const KEY = 'lumilio.apiKey';

export const session = {
  get key() { return localStorage.getItem(KEY); },
  set key(v) { if (v) localStorage.setItem(KEY, v); else localStorage.removeItem(KEY); },
};

const listeners = new Set();
/** Called with a message when the server refuses the key (revoked, deleted user). */
export function onUnauthorized(f) { listeners.add(f); }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function authHeaders(key = session.key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(res) {
  let code = 'http_' + res.status, message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON */ }
  return new ApiError(res.status, code, message);
}

/** JSON API call; throws ApiError with the server's code and message. */
export async function api(path, { method = 'GET', json, key, signal } = {}) {
  const headers = authHeaders(key);
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the server cannot be reached; check the connection and try again');
  }
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401 && key === undefined) listeners.forEach((f) => f(err.message));
    throw err;
  }
  if (res.status === 204) return null;
  return res.json();
}

/** Fetches a file with the key and returns a blob: URL (the caller revokes it). */
export async function blobUrl(path, signal) {
  const res = await fetch(path, { headers: authHeaders(), signal });
  if (!res.ok) throw await errorOf(res);
  return URL.createObjectURL(await res.blob());
}

// Thumbnails: a bounded cache of blob: URLs and a few fetches at a time,
// newest request first (what just scrolled into view).
const THUMBS = new Map(); // key -> {url, promise}
const MAX_THUMBS = 600;
const queue = [];
let running = 0;
const PARALLEL = 6;

function pump() {
  while (running < PARALLEL && queue.length) {
    const job = queue.pop();
    if (job.wanted && !job.wanted()) { job.reject(new DOMException('not needed', 'AbortError')); continue; }
    running++;
    blobUrl(job.path).then(job.resolve, job.reject).finally(() => { running--; pump(); });
  }
}

/** A blob: URL of a rendition, cached; `wanted()` says whether it is still needed when its turn comes. */
export function rendition(id, name = 'small', wanted) {
  const k = `${id}/${name}`;
  const hit = THUMBS.get(k);
  if (hit) {
    THUMBS.delete(k); // most recently used goes last
    THUMBS.set(k, hit);
    // Still queued: it is wanted while any of its callers still wants it (a
    // re-rendered tile asks again for what its old self had queued).
    if (hit.wanters) hit.wanters.push(wanted);
    return hit.promise;
  }
  const entry = { wanters: [wanted] };
  const stillWanted = () => entry.wanters.some((w) => !w || w());
  entry.promise = new Promise((resolve, reject) => {
    queue.push({ path: `/api/v1/assets/${id}/renditions/${name}`, wanted: stillWanted, resolve, reject });
    // After the caller has put its <img> into the page (wanted() looks for it).
    queueMicrotask(pump);
  }).then((url) => { entry.url = url; entry.wanters = null; return url; }, (e) => { THUMBS.delete(k); throw e; });
  THUMBS.set(k, entry);
  while (THUMBS.size > MAX_THUMBS) {
    const [oldKey, old] = THUMBS.entries().next().value;
    THUMBS.delete(oldKey);
    if (old.url && !document.querySelector(`img[src="${old.url}"]`)) URL.revokeObjectURL(old.url);
  }
  return entry.promise;
}

/** Forgets an asset's cached renditions (after a reprocess or delete). */
export function forgetRenditions(id) {
  for (const k of [...THUMBS.keys()]) {
    if (k.startsWith(id + '/')) {
      const e = THUMBS.get(k);
      THUMBS.delete(k);
      if (e.url) URL.revokeObjectURL(e.url);
    }
  }
}

export function clearCaches() {
  for (const e of THUMBS.values()) if (e.url) URL.revokeObjectURL(e.url);
  THUMBS.clear();
  queue.length = 0;
}
