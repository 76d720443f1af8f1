// app.js: the core of OxiNVR's page. DOM and formatting helpers, API calls
// (JSON, CSRF header, errors as messages), the login state from
// /api/auth/status, the hash router with per-page roles, and the navigation.
// Pages register themselves with Ox.page() from pages.js and admin.js.
'use strict';

const Ox = (window.Ox = { pages: {}, navOrder: [] });
const ROLES = { viewer: 1, operator: 2, admin: 3 };

// ---- DOM helpers ----

// h('button.primary#save', {onclick: f, type: 'button'}, 'Save') -> element.
// Never parses HTML: text is always text.
function h(sel, props, ...kids) {
  const parts = sel.match(/[.#]?[^.#]+/g);
  const el = document.createElement(parts[0][0] === '.' || parts[0][0] === '#' ? 'div' : parts.shift());
  const cls = parts.filter((p) => p[0] === '.').map((p) => p.slice(1));
  const id = parts.find((p) => p[0] === '#');
  if (cls.length) el.className = cls.join(' ');
  if (id) el.id = id.slice(1);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (['value', 'checked', 'disabled', 'selected', 'hidden', 'multiple'].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, ...kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

function clear(el, ...kids) {
  el.replaceChildren();
  return append(el, kids);
}

const $ = (sel, root) => (root || document).querySelector(sel);

// Gives each cell of a table its column's heading (data-label), which narrow
// screens show in front of the value when rows become stacked cards.
function labelCells(table) {
  const heads = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
  for (const tr of table.querySelectorAll('tbody tr')) [...tr.cells].forEach((c, i) => (c.dataset.label = heads[i] || ''));
  return table;
}

// A labelled form field around an input.
function field(label, input, hint) {
  return h('label.field', {}, h('span.label', { text: label }), input, hint ? h('small.muted', { text: hint }) : null);
}

// A message box that pages show errors and results in.
function msgBox() {
  const el = h('div.msg', { role: 'status', hidden: true });
  el.show = (text, kind) => {
    el.textContent = text;
    el.className = 'msg ' + (kind || 'error');
    el.hidden = !text;
  };
  el.hide = () => el.show('');
  return el;
}

function toast(text, kind) {
  const t = h('div.toast.' + (kind || 'info'), { text });
  $('#toasts').append(t);
  setTimeout(() => t.remove(), 4000);
}

// Runs an async action from a button: disables it meanwhile, shows errors in `box`.
async function busy(button, box, action) {
  if (box) box.hide();
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (e) {
    if (box) box.show(e.message);
    else toast(e.message, 'error');
  } finally {
    if (button) button.disabled = false;
  }
}

// ---- formatting ----

const pad = (n, w) => String(n).padStart(w || 2, '0');

function fmtDate(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function fmtClock(ms, withMs) {
  const d = new Date(ms);
  const s = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${s}.${pad(d.getMilliseconds(), 3)}` : s;
}

const fmtDateTime = (ms) => (ms === null || ms === undefined ? '—' : `${fmtDate(ms)} ${fmtClock(ms)}`);
const fmtIso = (iso) => (iso ? fmtDateTime(Date.parse(iso)) : '—');

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fmtDuration(ms) {
  let s = Math.round(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hms = `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  return d ? `${d}d ${hms}` : hms;
}

// Local midnight of the day `ms` falls on.
function dayStart(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

// 'YYYY-MM-DD' (local) -> ms of its midnight, or null.
function parseDay(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s || '');
  return m ? new Date(+m[1], +m[2] - 1, +m[3]).getTime() : null;
}

const iso = (ms) => new Date(ms).toISOString();

// ---- API ----

class ApiError extends Error {
  constructor(status, message, data, headers) {
    super(message);
    this.status = status;
    this.data = data;
    this.retryAfter = headers && headers.get('Retry-After');
  }
}

// api('POST', '/api/x', {a: 1}) -> parsed JSON (null for 204). Errors throw
// ApiError with the server's message. opts.quiet401: do not go to the login page.
async function api(method, path, body, opts) {
  const headers = {};
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && Ox.state.csrf) headers['X-CSRF-Token'] = Ox.state.csrf;
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `The recorder cannot be reached (${e.message}).`);
  }
  return readAnswer(r, opts || {});
}

async function readAnswer(r, opts) {
  const type = r.headers.get('Content-Type') || '';
  let data = null;
  if (r.status !== 204) data = type.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (r.ok) return data;
  const msg = (data && data.error) || `${r.status} ${r.statusText || 'error'}`;
  if (r.status === 401 && Ox.state.user && !opts.quiet401) sessionLost();
  throw new ApiError(r.status, msg, data, r.headers);
}

// Throws the server's error message of a non-OK fetch Response.
async function checkResponse(r) {
  if (!r.ok) await readAnswer(r, {});
  return r;
}

// ---- login state ----

Ox.state = { user: null, csrf: null, setupRequired: false, noAuth: false };

function role() {
  return Ox.state.user ? ROLES[Ox.state.user.role] || 0 : 0;
}

const can = (min) => role() >= ROLES[min];

// Takes the body of auth/status, auth/login or auth/setup.
function setAuth(s) {
  Ox.state.setupRequired = !!s.setup_required;
  Ox.state.user = s.user || null;
  Ox.state.csrf = s.csrf || null;
  Ox.state.webrtc = !!s.webrtc;
  renderChrome();
}

async function loadAuth() {
  try {
    setAuth(await api('GET', '/api/auth/status', undefined, { quiet401: true }));
  } catch (e) {
    if (e.status !== 501 && e.status !== 404) throw e;
    // A recorder without the auth routes lets everything through.
    Ox.state.noAuth = true;
    setAuth({ user: { name: 'no login', role: 'admin', totp: false } });
  }
}

function sessionLost() {
  Ox.state.user = null;
  Ox.state.csrf = null;
  renderChrome();
  toast('Your session has ended; please log in again.', 'error');
  go('#/login');
}

async function logout() {
  try {
    await api('POST', '/api/auth/logout');
  } catch (e) {
    toast(e.message, 'error');
  }
  setAuth({ user: null });
  go('#/login');
}

// ---- router ----

// Ox.page('live', {title, role, nav, render(view, params) -> cleanup?})
Ox.page = (name, def) => {
  Ox.pages[name] = def;
  if (def.nav) Ox.navOrder.push(name);
};

let cleanup = null;
let routeGen = 0;

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, query] = raw.split('?');
  return { name: name || '', params: new URLSearchParams(query || '') };
}

// Where the current user may land: setup, login or the page asked for.
function target(name) {
  if (Ox.state.setupRequired) return 'setup';
  if (!Ox.state.user) return 'login';
  if (name === 'login' || name === 'setup' || !Ox.pages[name]) return 'live';
  return name;
}

function route() {
  const { name, params } = parseHash();
  const want = target(name);
  if (want !== name) {
    if (want === 'login' && Ox.pages[name] && !['login', 'setup'].includes(name)) Ox.afterLogin = location.hash;
    history.replaceState(null, '', '#/' + want);
    return route();
  }
  if (cleanup) cleanup();
  cleanup = null;
  const def = Ox.pages[name];
  const view = $('#view');
  const hash = location.hash;
  const gen = ++routeGen;
  clear(view);
  view.dataset.page = name;
  view.dataset.ready = '';
  document.title = `${def.title} · OxiNVR`;
  markNav(name);
  if (def.role && !can(def.role)) {
    append(view, denied(def));
    return ready(view, hash);
  }
  // Each rendering gets its own pane: a page left while it still loads writes into a detached one.
  const pane = append(view, [h('div.pane')]).lastChild;
  Promise.resolve()
    .then(() => def.render(pane, params))
    .then((c) => keepCleanup(gen, c), (e) => append(pane, h('p.msg.error', { text: e.message })))
    .then(() => gen === routeGen && ready(view, hash));
}

// The cleanup of the page on screen; a page left before it finished rendering is cleaned up at once.
function keepCleanup(gen, c) {
  if (typeof c !== 'function') return;
  if (gen === routeGen) cleanup = c;
  else c();
}

// Marks the view as rendered for `hash` (the browser tests wait for it).
function ready(view, hash) {
  view.dataset.ready = hash;
}

function denied(def) {
  return h(
    'section.denied',
    { 'data-denied': def.role },
    h('h1', { text: 'Access denied' }),
    h('p', { text: `The ${def.title} page needs the ${def.role} role; you are signed in as ${Ox.state.user.role}.` }),
    h('a.button', { href: '#/live', text: 'Back to live view' }),
  );
}

// ---- chrome: navigation and the user badge ----

function renderChrome() {
  const nav = $('#nav');
  const who = $('#who');
  const logged = !!Ox.state.user;
  $('#nav-toggle').hidden = !logged;
  clear(who);
  clear(nav);
  if (!logged) return;
  for (const name of Ox.navOrder) {
    const p = Ox.pages[name];
    if (p.role && !can(p.role)) continue;
    nav.append(h('a', { href: '#/' + name, 'data-page': name, text: p.title }));
  }
  const u = Ox.state.user;
  append(who, h('a.who-name', { href: '#/account', title: `${u.name} (${u.role})` }, u.name, h('span.who-role', { text: ` (${u.role})` })));
  if (Ox.state.noAuth) who.append(h('span.badge.warn', { text: 'no login' }));
  else who.append(h('button.link#header-logout', { type: 'button', onclick: logout, text: 'Log out' }));
}

function markNav(name) {
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  setNavOpen(false);
}

function setNavOpen(open) {
  $('#nav').classList.toggle('open', open);
  $('#nav-toggle').setAttribute('aria-expanded', String(open));
}

// ---- the clock banner ----

const CLOCK_UNSET = 'The clock is not set (over 30 days before the firmware build date): recordings are kept but their times are unknown until it is.';

// /api/health (public) says whether the recorder's clock reads at least 30 days before the firmware's build date.
// Until it does, every page says so (rechecked every 15 s: NTP may answer at any time).
async function watchClock() {
  let clock = null;
  try {
    clock = (await api('GET', '/api/health', undefined, { quiet401: true })).clock || null;
  } catch (e) {
    // Unreachable now: keep what the banner says and try again.
  }
  const banner = $('#clock-banner');
  if (clock) banner.hidden = clock.trusted;
  if (clock && !clock.trusted) {
    clear(banner, h('b', { text: CLOCK_UNSET }), ' ',
      h('span', { text: `The recorder reads ${fmtIso(clock.now)}; the firmware was built ${fmtIso(clock.floor)}. ` }),
      h('a', { href: `#/recordings?day=${fmtDate(clock.now_ms)}`, text: 'Recordings made now' }));
  }
  if (!clock || !clock.trusted) setTimeout(watchClock, 15000);
}

async function start() {
  $('#nav-toggle').addEventListener('click', () => setNavOpen(!$('#nav').classList.contains('open')));
  window.addEventListener('hashchange', route);
  watchClock();
  try {
    await loadAuth();
  } catch (e) {
    clear($('#view'), h('p.msg.error', { text: `Cannot start: ${e.message}` }));
    return;
  }
  route();
}

Object.assign(Ox, {
  h, append, clear, $, field, msgBox, toast, busy, pad, fmtDate, fmtClock, fmtDateTime, fmtIso, fmtBytes,
  fmtDuration, dayStart, parseDay, iso, api, checkResponse, ApiError, setAuth, can, go, logout, ROLES,
});

// Runs after the deferred page scripts have registered their pages.
document.addEventListener('DOMContentLoaded', start);
