// The web app's entry: sign-in with an API key, the shell, and the router
// (#/ library, #/photo/ID, #/search?..., #/status).

// Errors are collected for the browser tests (and visible in devtools as usual).
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message || e)));
window.addEventListener('securitypolicyviolation', (e) => window.__errors.push(`CSP blocked ${e.blockedURI} (${e.violatedDirective})`));
window.addEventListener('unhandledrejection', (e) => window.__errors.push(`unhandled: ${e.reason && (e.reason.stack || e.reason.message || e.reason)}`));
const consoleError = console.error.bind(console);
console.error = (...args) => { window.__errors.push(args.map(String).join(' ')); consoleError(...args); };

import { api, session, onUnauthorized, clearCaches } from './api.js';
import { h, clear } from './util.js';
import * as events from './events.js';
import { library, libraryView, followEvents } from './timeline.js';
import { panel as uploadPanel, installDrop } from './upload.js';
import { viewer as makeViewer } from './viewer.js';
import { searchView } from './search.js';
import { statusView } from './status.js';

const root = document.getElementById('app');

function signInScreen(message) {
  const input = h('input#key', { type: 'password', name: 'key', autocomplete: 'current-password', required: true,
    placeholder: 'lum_…', spellcheck: 'false', 'aria-describedby': 'signin-help' });
  const error = h('p.error#signin-error', { role: 'alert', hidden: !message }, message || '');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form.signin', { 'aria-labelledby': 'signin-title' },
    h('h1#signin-title', 'Lumilio'),
    h('label', { for: 'key' }, 'API key'),
    input,
    h('p.muted#signin-help', 'Paste an API key. `make run` prints one for the dev user; ',
      h('code', 'lumilio user create NAME'), ' makes one for a new user. It stays in this browser until you sign out.'),
    error, button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    button.disabled = true;
    error.hidden = true;
    try {
      await api('/api/v1/assets?limit=1', { key });
      session.key = key;
      start();
    } catch (err) {
      error.hidden = false;
      error.textContent = err.status === 401
        ? `That API key was not accepted. The server says: ${err.message}`
        : `Could not sign in: ${err.message}`;
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  clear(root).append(h('main.signin-page', form));
  input.focus();
}

let shell = null;

function signOut(message) {
  session.key = null;
  events.stop();
  clearCaches();
  library.reset();
  shell = null;
  location.hash = '';
  signInScreen(message);
}

onUnauthorized((message) => { if (session.key) signOut(`You were signed out: ${message}`); });

function navigate(hash, replace = false) {
  if (replace) { history.replaceState(null, '', hash); route(); } else location.hash = hash;
}

function start() {
  const lib = libraryView();
  const search = searchView({ navigate });
  const status = statusView();
  let base = '#/';
  const viewer = makeViewer({
    close: () => navigate(base),
    go: (id, replace = true) => navigate(`#/photo/${id}`, replace),
  });
  const push = h('span.push', { title: 'live updates', 'aria-live': 'polite' });
  const nav = h('nav', { 'aria-label': 'Main' },
    h('a', { href: '#/', 'data-nav': 'library' }, 'Library'),
    h('a', { href: '#/search', 'data-nav': 'search' }, 'Search'),
    h('a', { href: '#/status', 'data-nav': 'status' }, 'Status'));
  const header = h('header.top',
    h('a.brand', { href: '#/' }, h('img', { src: '/web/icon.svg', alt: '', width: 22, height: 22 }), h('span', 'Lumilio')),
    nav, h('span.spacer'), push,
    h('button', { type: 'button', 'data-action': 'upload', onclick: () => { uploadPanel.hidden = !uploadPanel.hidden; } }, 'Upload'),
    h('button.secondary', { type: 'button', 'data-action': 'signout', onclick: () => signOut() }, 'Sign out'));
  const dropOverlay = h('div.drop-overlay', { hidden: true }, h('p', 'Drop photos or folders to upload'));
  clear(root).append(header, h('main.views', lib.el, search.el, status.el), uploadPanel, viewer.el, dropOverlay);
  shell = { lib, search, status, viewer, nav, get base() { return base; }, set base(b) { base = b; } };
  installDrop(dropOverlay);
  followEvents();
  events.subscribe((type) => {
    if (type === 'ready') { push.textContent = '● live'; push.classList.add('on'); }
    if (type === 'down') { push.textContent = '○ reconnecting'; push.classList.remove('on'); }
    if (type === 'unauthorized') signOut('Your key is no longer accepted.');
    if (type === 'revoked') signOut('Your key was revoked. Sign in with a new one (lumilio user create-key NAME).');
  });
  events.start();
  route();
}

function route() {
  if (!shell) return;
  const hash = location.hash || '#/';
  const [path, query] = hash.slice(1).split('?');
  const photo = path.match(/^\/photo\/([^/]+)$/);
  let view = 'library';
  if (photo) view = shell.base.startsWith('#/search') ? 'search' : shell.base.startsWith('#/status') ? 'status' : 'library';
  else if (path.startsWith('/search')) view = 'search';
  else if (path.startsWith('/status')) view = 'status';
  if (!photo) {
    const wasPhoto = !shell.viewer.el.hidden;
    const current = shell.viewer.current;
    shell.viewer.hide();
    const same = shell.base === hash;
    shell.base = hash;
    for (const [name, v] of [['library', shell.lib], ['search', shell.search], ['status', shell.status]]) {
      if (name === view) {
        if (!(wasPhoto && same)) v.show(new URLSearchParams(query || ''));
        else v.el.hidden = false;
      } else v.hide();
    }
    if (wasPhoto && current && view === 'library') shell.lib.focusAsset(current.asset_id);
  } else {
    // The base view stays underneath; show it if nothing is shown yet.
    const v = { library: shell.lib, search: shell.search, status: shell.status }[view];
    if (v.el.hidden) v.show(new URLSearchParams((shell.base.split('?')[1]) || ''));
    shell.viewer.show(decodeURIComponent(photo[1]));
  }
  for (const a of shell.nav.querySelectorAll('a')) a.toggleAttribute('aria-current', a.dataset.nav === view);
  document.title = photo ? 'Photo · Lumilio' : `${view[0].toUpperCase()}${view.slice(1)} · Lumilio`;
}

window.addEventListener('hashchange', route);

if (session.key) start(); else signInScreen();
