// pages.js: the pages every user sees. Log in, first-run setup, the live
// grid (one LivePlayer per enabled stream, click for a large view), the list
// of recordings, the per-day timeline with the VOD player, export with a
// download progress bar. The Events view and detection's parts are in events.js.
'use strict';

// ---- shared bits ----

async function listStreams() {
  return (await api('GET', '/api/streams')).streams;
}

// A <select> of stream names; `all` adds an "all streams" entry.
function streamSelect(streams, selected, all) {
  const opts = streams.map((s) => h('option', { value: s.name, selected: s.name === selected, text: s.name }));
  if (all) opts.unshift(h('option', { value: '', text: 'All streams', selected: !selected }));
  return h('select', { name: 'stream' }, opts);
}

function pageHead(title, ...tools) {
  return h('div.page-head', {}, h('h1', { text: title }), h('div.tools', {}, tools));
}

// Replaces the page's query string without reloading it.
function setParams(name, params) {
  history.replaceState(null, '', `#/${name}?${new URLSearchParams(params)}`);
}

// ---- log in ----

Ox.page('login', { title: 'Log in', render: renderLogin });

function renderLogin(view) {
  const user = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none' });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', { name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6 });
  const codeField = field('Authenticator code', code);
  codeField.hidden = true;
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Log in' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, () => login(user.value, pass.value, codeField, code));
  };
  append(view, h('form.card.narrow#login-form', { onsubmit: submit }, h('h1', { text: 'Log in' }),
    field('User name', user), field('Password', pass), codeField, box, btn));
  user.focus();
}

async function login(username, password, codeField, code) {
  const body = { username, password };
  if (!codeField.hidden && code.value.trim()) body.totp = code.value.trim();
  try {
    setAuth(await api('POST', '/api/auth/login', body, { quiet401: true }));
  } catch (e) {
    if (e.data && e.data.totp_required) {
      const first = codeField.hidden;
      codeField.hidden = false;
      code.focus();
      if (first && !body.totp) throw new Error('Enter the 6-digit code from your authenticator app.');
    }
    if (e.status === 429 && e.retryAfter) throw new Error(`${e.message} Try again in ${e.retryAfter} s.`);
    throw e;
  }
  go(Ox.afterLogin || '#/live');
  Ox.afterLogin = null;
}

// ---- first-run setup ----

Ox.page('setup', { title: 'First-run setup', render: renderSetup });

function renderSetup(view) {
  const user = h('input', { name: 'username', autocomplete: 'username', required: true, value: 'admin' });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true });
  const again = h('input', { name: 'confirm', type: 'password', autocomplete: 'new-password', required: true });
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Create administrator' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      if (pass.value !== again.value) throw new Error('The two passwords differ.');
      setAuth(await api('POST', '/api/auth/setup', { username: user.value, password: pass.value }, { quiet401: true }));
      go('#/live');
    });
  };
  append(view, h('form.card.narrow#setup-form', { onsubmit: submit }, h('h1', { text: 'Welcome to OxiNVR' }),
    h('p', { text: 'Create the first administrator account. It can add cameras and other users.' }),
    field('User name', user), field('Password', pass), field('Password again', again), box, btn));
  pass.focus();
}

// ---- live ----

Ox.page('live', { title: 'Live', role: 'viewer', nav: true, render: renderLive });

async function renderLive(view, params) {
  const single = params.get('stream');
  const all = await listStreams();
  const streams = all.filter((s) => s.enabled && !s.archive && (!single || s.name === single));
  const archived = all.filter((s) => s.archive && (!single || s.name === single));
  if (single) {
    append(view, pageHead(single, h('a.button', { href: '#/live', text: '← All cameras' }),
      h('a.button', { href: `#/timeline?stream=${encodeURIComponent(single)}`, text: 'Timeline' })));
  }
  const grid = h('div.grid' + (single ? '.single' : '.fill') + '#live-grid');
  if (!single) append(view, pageHead('Live', layoutSelect(grid, streams.length)));
  if (archived.length) append(view, archiveNote(archived));
  if (!streams.length) return archived.length ? undefined : append(view, noStreams(single));
  const tiles = streams.map((s) => liveTile(s, !!single));
  append(view, clear(grid, tiles.map((t) => t.el)));
  if (single && can('operator')) ptzControls(view, single).catch(() => {});
  const fit = () => fitGrid(grid, streams.length);
  if (!single) {
    fit();
    window.addEventListener('resize', fit);
  }
  const timer = setInterval(() => refreshTiles(tiles), 5000);
  const stopDetections = Ox.watchDetections(grid, streams);
  return () => {
    stopDetections();
    clearInterval(timer);
    window.removeEventListener('resize', fit);
    tiles.forEach((t) => t.player.stop());
  };
}

// Archive mode: the boxes of the bucket, as groups of streams. Recordings
// only: there is no live view of an archived stream.
function archiveNote(archived) {
  const boxes = new Map();
  for (const s of archived) boxes.set(s.archive.box, [...(boxes.get(s.archive.box) || []), s]);
  return h('section.card#archive', {}, h('h2', { text: 'Archive' }),
    h('p.note', { text: 'These streams are recordings of other boxes read from the bucket: there is no live view for archive streams. Open one on the timeline.' }),
    [...boxes].map(([box, list]) => h('div.archive-box', {}, h('h3', { text: box }),
      h('ul', {}, list.map((s) => h('li', {}, h('a', { href: `#/timeline?stream=${encodeURIComponent(s.name)}`, text: s.archive.stream })))))));
}

// PTZ of a stream's ONVIF camera: hold an arrow to move, release to stop; presets.
async function ptzControls(view, name) {
  const path = `/api/streams/${encodeURIComponent(name)}`;
  const o = await api('GET', path + '/onvif').catch(() => null);
  if (!o || !o.ptz) return;
  const send = (body) => api('POST', path + '/ptz', body).catch((e) => toast(e.message, 'error'));
  const pad = [['◀', 'pan', -0.5], ['▲', 'tilt', 0.5], ['▼', 'tilt', -0.5], ['▶', 'pan', 0.5], ['+', 'zoom', 0.5], ['−', 'zoom', -0.5]]
    .map(([t, axis, v]) => {
      const b = h('button.ptz', { type: 'button', text: t, 'aria-label': `${axis} ${v > 0 ? '+' : '-'}` });
      b.addEventListener('pointerdown', () => send({ action: 'move', [axis]: v, timeout_ms: 10000 }));
      for (const ev of ['pointerup', 'pointerleave']) b.addEventListener(ev, () => send({ action: 'stop' }));
      return b;
    });
  const presets = h('select', { name: 'preset', 'aria-label': 'Preset' });
  const load = async () => {
    const r = await api('POST', path + '/ptz', { action: 'presets' });
    clear(presets, r.presets.map((p) => h('option', { value: p.token, text: p.name || p.token })));
  };
  const label = h('input', { name: 'preset-name', placeholder: 'New preset', size: 10 });
  append(view, h('div.tools#ptz', {}, pad, presets,
    h('button', { type: 'button', text: 'Go', onclick: () => send({ action: 'goto_preset', preset: presets.value }) }), label,
    h('button', { type: 'button', text: 'Save', onclick: async () => { if (label.value) { await send({ action: 'set_preset', name: label.value }); label.value = ''; load(); } } })));
  await load();
}

// ---- live grid layout: 1, 2x2, 3x3 or 4x4 cells filling the screen ----

const LAYOUT_KEY = 'oxinvr.live.layout';
const LAYOUTS = [['auto', 'Auto'], ['1', '1×1'], ['2', '2×2'], ['3', '3×3'], ['4', '4×4']];

function savedLayout() {
  try {
    const v = localStorage.getItem(LAYOUT_KEY);
    return LAYOUTS.some(([k]) => k === v) ? v : 'auto';
  } catch (e) {
    return 'auto';
  }
}

function layoutSelect(grid, count) {
  const sel = h('select#live-layout', { name: 'layout', 'aria-label': 'Layout' },
    LAYOUTS.map(([k, text]) => h('option', { value: k, text, selected: k === savedLayout() })));
  sel.addEventListener('change', () => {
    try {
      localStorage.setItem(LAYOUT_KEY, sel.value);
    } catch (e) {
      /* private mode: the choice lasts until the page is left */
    }
    grid.dataset.layout = sel.value;
    fitGrid(grid, count);
  });
  grid.dataset.layout = sel.value;
  return sel;
}

// Cells per side for `count` cameras: 1, 2x2, 3x3, then 4x4 (more scroll).
const autoCells = (count) => (count <= 1 ? 1 : count <= 4 ? 2 : count <= 9 ? 3 : 4);

// Sizes the grid's cells so n x n of them fill the space below the grid's top.
// On a narrow portrait screen "auto" stacks the cameras one under another.
function fitGrid(grid, count) {
  const chosen = grid.dataset.layout || 'auto';
  const width = grid.clientWidth;
  const phone = width < 600 && window.innerHeight > window.innerWidth;
  const n = chosen === 'auto' ? (phone ? 1 : autoCells(count)) : Number(chosen);
  const top = grid.getBoundingClientRect().top + window.scrollY;
  const free = Math.max(window.innerHeight - top - 12, 160);
  const gap = 8;
  const cell = phone ? ((width - gap * (n - 1)) / n) * 9 / 16 : (free - gap * (n - 1)) / n;
  const auto = document.querySelector('#live-layout option[value=auto]');
  if (auto) auto.textContent = phone ? 'Auto (one per row)' : `Auto (${autoCells(count)}×${autoCells(count)})`;
  grid.style.setProperty('--cols', n);
  grid.style.setProperty('--row', `${Math.max(90, Math.floor(cell))}px`);
  grid.dataset.cells = n;
}

function noStreams(single) {
  const msg = single ? `No enabled stream named "${single}".` : 'No enabled streams yet.';
  return h('p.empty', {}, msg, ' ', can('operator') ? h('a', { href: '#/streams?new=1', text: 'Add a camera' }) : null);
}

function liveTile(s, large) {
  const video = h('video', { muted: true, autoplay: true, playsinline: true, controls: large || null });
  video.muted = true;
  const state = h('span.state', { text: '' });
  const info = h('span.info', { text: streamInfo(s) });
  const problem = h('span.problem', { text: detectionProblem(s) });
  const el = h('div.tile', { 'data-stream': s.name }, video, h('div.overlay', {}, h('b', { text: s.name }), info, state, problem));
  if (!large) {
    el.classList.add('clickable');
    el.addEventListener('click', () => go(`#/live?stream=${encodeURIComponent(s.name)}`));
  }
  // Tiles play the sub stream (when the camera has one); the large view the main.
  const player = new Ox.LivePlayer(video, s.name, (text, kind) => {
    state.textContent = text;
    state.className = 'state ' + kind;
    el.dataset.state = kind;
  }, { sub: !large }).start();
  return { el, info, problem, name: s.name, player };
}

// Why detection cannot run on a stream (e.g. H.265 without a sub stream or snapshot URL).
function detectionProblem(s) {
  const p = s.detection && s.detection.problem;
  return p ? `Detection: ${p}` : '';
}

function streamInfo(s) {
  const st = s.status;
  if (!st) return 'stopped';
  return st.state === 'streaming' ? `${st.fps} fps · ${Math.round(st.bitrate_kbps)} kbit/s` : st.state;
}

async function refreshTiles(tiles) {
  try {
    const streams = await listStreams();
    for (const t of tiles) {
      const s = streams.find((x) => x.name === t.name);
      if (s) {
        t.info.textContent = streamInfo(s);
        t.problem.textContent = detectionProblem(s);
      }
    }
  } catch (e) {
    /* the next round may work */
  }
}

// ---- recordings ----

Ox.page('recordings', { title: 'Recordings', role: 'viewer', nav: true, render: renderRecordings });

async function renderRecordings(view, params) {
  const streams = await listStreams();
  const day = Ox.parseDay(params.get('day')) ?? dayStart(Date.now());
  const sel = streamSelect(streams, params.get('stream') || '', true);
  const date = h('input', { type: 'date', name: 'day', value: fmtDate(day) });
  const body = h('div');
  const reload = () => {
    setParams('recordings', { stream: sel.value, day: date.value });
    loadRecordings(body, sel.value, date.value).catch((e) => clear(body, h('p.msg.error', { text: e.message })));
  };
  sel.addEventListener('change', reload);
  date.addEventListener('change', reload);
  append(view, pageHead('Recordings', sel, date, h('button', { type: 'button', onclick: reload, text: 'Refresh' })), body);
  await loadRecordings(body, sel.value, date.value);
  return () => stopPlayer(body);
}

function stopPlayer(body) {
  const v = body.querySelector('video');
  if (v) v.removeAttribute('src');
}

async function loadRecordings(body, stream, dayText) {
  const day = Ox.parseDay(dayText) ?? dayStart(Date.now());
  const q = new URLSearchParams({ start: iso(day), end: iso(day + 86400000) });
  if (stream) q.set('stream', stream);
  const data = await api('GET', '/api/recordings?' + q);
  const recs = data.recordings.slice().reverse();
  const player = h('div.player');
  const total = recs.reduce((n, r) => n + shownSize(r), 0);
  clear(body, player,
    h('p.muted', { text: `${recs.length} recording(s), ${fmtBytes(total)}, ${data.gaps.length} gap(s) on ${fmtDate(day)}.` }),
    recs.some((r) => r.time_unknown)
      ? h('p.msg.info', { text: 'Recordings marked "time unknown" were made while the clock was not set: their times are not when they happened.' })
      : null,
    recs.length ? recordingTable(recs, player) : h('p.empty', { text: 'Nothing recorded on this day.' }),
    data.gaps.length ? gapTable(data.gaps) : null);
}

const LIMIT = 300;

function recordingTable(recs, player) {
  const rows = (n) => recs.slice(0, n).map((r) => recordingRow(r, player));
  const tbody = h('tbody', {}, rows(LIMIT));
  const tbl = labelCells(h('table.list#recordings', {},
    h('thead', {}, h('tr', {}, ['Stream', 'Start', 'Duration', 'Size', 'Video', ''].map((t) => h('th', { text: t })))), tbody));
  const more = recs.length > LIMIT
    ? h('button', { type: 'button', text: `Show all ${recs.length}`, onclick: (e) => clear(tbody, rows(recs.length)) && labelCells(tbl) && e.target.remove() })
    : null;
  return h('div.table-wrap', {}, tbl, more);
}

// The recording being written says how far it is (its own figures move only at each sync).
const shownSize = (r) => (r.writing ? r.writing.bytes : r.bytes);
const shownDuration = (r) => (r.writing ? r.writing.duration_ms : r.duration_ms);

function recordingRow(r, player) {
  const start = Date.parse(r.start);
  const link = `#/timeline?stream=${encodeURIComponent(r.stream)}&day=${fmtDate(start)}&t=${start}`;
  const exp = `#/export?stream=${encodeURIComponent(r.stream)}&start=${start}&end=${Date.parse(r.end)}`;
  return h('tr', { 'data-id': r.id, 'data-open': !r.closed },
    h('td', { text: r.stream }),
    h('td', {}, fmtClock(start), r.closed ? null : h('span.badge.rec', { text: 'recording' }), timeUnknown(r)),
    h('td.duration', { text: fmtDuration(shownDuration(r)) }),
    h('td.size', { text: fmtBytes(shownSize(r)) }),
    h('td', { text: `${r.codec} ${r.width}x${r.height}${r.has_audio ? ' + audio' : ''}` }),
    h('td.actions', {},
      h('button', { type: 'button', text: 'Play', onclick: () => playFile(player, r) }),
      h('a.button', { href: link, text: 'Timeline' }),
      h('a.button', { href: exp, text: 'Export' }),
      h('a.button', { href: `${r.url}.mp4`, download: `${r.stream}-${r.id}.mp4`, text: 'File' })));
}

// Recorded while the recorder's clock was not set: its times are the recorder's guess (1970 + uptime).
function timeUnknown(r) {
  if (!r.time_unknown) return null;
  return h('span.badge.warn.time-unknown', { text: 'time unknown', title: 'Recorded while the clock was not set: the time shown is not when it happened.' });
}

function playFile(player, r) {
  const v = h('video', { controls: true, autoplay: true, playsinline: true, src: `${r.url}.mp4` });
  clear(player, h('div.player-head', {}, h('b', { text: `${r.stream} · ${fmtDateTime(Date.parse(r.start))}` }),
    h('button', { type: 'button', text: 'Close', onclick: () => clear(player) })), v);
  player.scrollIntoView({ block: 'nearest' });
}

function gapTable(gaps) {
  return h('details', {}, h('summary', { text: `Gaps (${gaps.length})` }),
    h('div.table-wrap', {}, labelCells(h('table.list', {},
      h('thead', {}, h('tr', {}, ['Stream', 'From', 'To', 'Duration', 'Reason'].map((t) => h('th', { text: t })))),
      h('tbody', {}, gaps.map((g) => h('tr', {}, h('td', { text: g.stream }), h('td', { text: fmtDateTime(g.start_ms) }),
        h('td', { text: fmtDateTime(g.end_ms) }), h('td', { text: fmtDuration(g.duration_ms) }), h('td.wrap', { text: g.reason }))))))));
}

// ---- timeline ----

Ox.page('timeline', { title: 'Timeline', role: 'viewer', nav: true, render: renderTimeline });

// Events of a stream's day for the events lane: set by events.js.
Ox.timelineEvents = async () => [];

const WINDOW_MS = 30 * 60000;

async function renderTimeline(view, params) {
  const streams = await listStreams();
  if (!streams.length) return append(view, pageHead('Timeline'), noStreams());
  const ui = timelineUi(streams, params);
  append(view, ui.head, ui.bar, ui.box, ui.stage);
  const tl = new Ox.Timeline(ui.canvas, { onSeek: (ms) => playAt(ctx, ms), onView: () => {} });
  const player = new Ox.VodPlayer(ui.video, (text) => ui.box.show(text));
  const ctx = { ui, tl, player, stream: ui.sel.value, day: null };
  wireTimeline(ctx);
  await loadDay(ctx, Ox.parseDay(params.get('day')) ?? dayStart(Date.now()));
  const t = Number(params.get('t'));
  if (t) playAt(ctx, t);
  const timer = setInterval(() => ctx.day + 86400000 > Date.now() && refreshDay(ctx), 15000);
  return () => {
    clearInterval(timer);
    player.destroy();
    tl.destroy();
  };
}

function timelineUi(streams, params) {
  const sel = streamSelect(streams, params.get('stream') || streams[0].name);
  const date = h('input', { type: 'date', name: 'day' });
  const btn = (text, title) => h('button', { type: 'button', text, title });
  const ui = { sel, date, prev: btn('◀', 'Previous day'), next: btn('▶', 'Next day'), zin: btn('+', 'Zoom in'),
    zout: btn('−', 'Zoom out'), fit: btn('Fit', 'Show all recordings of the day'), play: btn('Play'),
    clock: h('span.clock#tl-clock', { text: '—' }), exp: h('a.button#tl-export', { href: '#/export', text: 'Export view' }),
    canvas: h('canvas.timeline#timeline'), video: h('video#tl-video', { playsinline: true, muted: true }), box: msgBox(),
    summary: h('span.muted'), events: h('span#tl-events', { text: 'events: …' }) };
  ui.head = pageHead('Timeline', sel, h('span.daypick', {}, ui.prev, date, ui.next));
  const key = (cls, text) => h('span.key', {}, h('i.swatch.' + cls), text);
  ui.legend = h('div.legend#tl-legend', {}, key('rec', 'recorded'), key('gap', 'gap (not recorded)'), key('event', ui.events));
  ui.bar = h('div.timeline-wrap', {}, h('div.tools', {}, ui.zout, ui.zin, ui.fit, ui.summary), ui.canvas, ui.legend);
  ui.stage = h('div.stage', {}, ui.video, h('div.controls', {}, ui.play, ui.clock, ui.exp));
  return ui;
}

function wireTimeline(ctx) {
  const { ui, tl, player } = ctx;
  ui.sel.addEventListener('change', () => ((ctx.stream = ui.sel.value), loadDay(ctx, ctx.day)));
  ui.date.addEventListener('change', () => loadDay(ctx, Ox.parseDay(ui.date.value) ?? ctx.day));
  ui.prev.addEventListener('click', () => loadDay(ctx, dayStart(ctx.day - 43200000)));
  ui.next.addEventListener('click', () => loadDay(ctx, dayStart(ctx.day + 129600000)));
  ui.zin.addEventListener('click', () => tl.zoom(0.5));
  ui.zout.addEventListener('click', () => tl.zoom(2));
  ui.fit.addEventListener('click', () => tl.fit());
  ui.play.addEventListener('click', () => togglePlay(ctx));
  const v = ui.video;
  v.addEventListener('timeupdate', () => showTime(ctx));
  v.addEventListener('play', () => (ui.play.textContent = 'Pause'));
  v.addEventListener('pause', () => (ui.play.textContent = 'Play'));
  v.addEventListener('ended', () => continueAfter(ctx));
  tl.opts.onView = () => updateExportLink(ctx);
}

async function loadDay(ctx, day) {
  ctx.day = day;
  ctx.ui.date.value = fmtDate(day);
  setParams('timeline', { stream: ctx.stream, day: fmtDate(day) });
  ctx.tl.setDay(day);
  ctx.loaded = null;
  await refreshDay(ctx);
  ctx.tl.fit();
}

async function refreshDay(ctx) {
  const q = new URLSearchParams({ stream: ctx.stream, start: iso(ctx.day), end: iso(ctx.day + 86400000) });
  try {
    const data = await api('GET', '/api/recordings?' + q);
    ctx.tl.spans = mergeSpans(data.recordings.map((r) => [Date.parse(r.start), Date.parse(r.end)]));
    ctx.tl.bounds = data.recordings.map((r) => Date.parse(r.start));
    ctx.tl.gaps = data.gaps.map((g) => [g.start_ms, g.end_ms]);
    ctx.tl.steps = data.clock_steps || [];
    ctx.tl.events = await Ox.timelineEvents(ctx.stream, ctx.day);
    const n = ctx.tl.events.length;
    ctx.ui.events.textContent = n ? `events: ${n} on this day` : 'events: none on this day';
    const total = ctx.tl.spans.reduce((n, s) => n + s[1] - s[0], 0);
    const unknown = data.recordings.filter((r) => r.time_unknown).length;
    ctx.ui.summary.textContent = `${data.recordings.length} recording(s), ${fmtDuration(total)} recorded`
      + (unknown ? `; ${unknown} of unknown time (made while the clock was not set)` : '')
      + ctx.tl.steps.map((s) => `; the clock jumped ${s.step_ms < 0 ? 'back' : 'ahead'} `
        + `${fmtDuration(Math.abs(s.step_ms))} at ${fmtDateTime(s.at_ms)}`).join('');
    ctx.tl.draw();
  } catch (e) {
    ctx.ui.box.show(e.message);
  }
}

// Joins recordings that follow each other within 1.5 s into one span.
function mergeSpans(list) {
  const out = [];
  for (const [a, b] of list.sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && a - last[1] < 1500) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

// Plays from wall clock ms: within the loaded playlist, or loads a new one.
async function playAt(ctx, ms) {
  const { player, ui } = ctx;
  ui.box.hide();
  ctx.tl.setCursor(ms);
  const inLoaded = ctx.loaded && ms >= ctx.loaded[0] && ms < player.end;
  try {
    if (!inLoaded) await loadWindow(ctx, ms);
    if (!player.seekWall(ms)) throw new Error('Nothing recorded after this moment.');
    await ui.video.play();
  } catch (e) {
    if (e.name !== 'AbortError') ui.box.show(e.message);
  }
}

async function loadWindow(ctx, from) {
  const end = Math.min(from + WINDOW_MS, ctx.day + 86400000);
  const q = new URLSearchParams({ start: iso(from), end: iso(Math.max(end, from + 1000)) });
  await ctx.player.load(`/api/playback/${encodeURIComponent(ctx.stream)}.m3u8?${q}`);
  ctx.loaded = [from, end];
}

// At the end of a loaded window, goes on with the next recorded moment.
function continueAfter(ctx) {
  const after = ctx.player.end;
  const next = ctx.tl.spans.find((s) => s[1] > after + 500);
  if (next && next[0] < ctx.day + 86400000) playAt(ctx, Math.max(after, next[0]));
}

function togglePlay(ctx) {
  const v = ctx.ui.video;
  if (!ctx.loaded) {
    const first = ctx.tl.cursor ?? (ctx.tl.spans[0] || [])[0];
    if (first !== undefined) playAt(ctx, first);
    return;
  }
  if (v.paused) v.play().catch((e) => ctx.ui.box.show(e.message));
  else v.pause();
}

function showTime(ctx) {
  const ms = ctx.player.wallAt(ctx.ui.video.currentTime);
  if (ms === null) return;
  ctx.ui.clock.textContent = fmtDateTime(ms);
  ctx.tl.setCursor(ms);
}

function updateExportLink(ctx) {
  const [a, b] = ctx.tl.view;
  const spans = ctx.tl.spans.filter((s) => s[1] > a && s[0] < b);
  const start = spans.length ? Math.max(a, spans[0][0]) : a;
  const end = spans.length ? Math.min(b, spans[spans.length - 1][1]) : b;
  ctx.ui.exp.href = `#/export?stream=${encodeURIComponent(ctx.stream)}&start=${Math.round(start)}&end=${Math.round(end)}`;
}

// ---- export ----

Ox.page('export', { title: 'Export', role: 'viewer', nav: true, render: renderExport });

// 'YYYY-MM-DDTHH:MM:SS' (local, for datetime-local inputs) of ms.
const localInput = (ms) => `${fmtDate(ms)}T${fmtClock(ms)}`;

async function renderExport(view, params) {
  const streams = await listStreams();
  if (!streams.length) return append(view, pageHead('Export'), noStreams());
  const end = Number(params.get('end')) || Date.now();
  const start = Number(params.get('start')) || end - 60000;
  const f = {
    sel: streamSelect(streams, params.get('stream') || streams[0].name),
    start: h('input', { type: 'datetime-local', step: 1, name: 'start', value: localInput(start), required: true }),
    end: h('input', { type: 'datetime-local', step: 1, name: 'end', value: localInput(end), required: true }),
    btn: h('button.primary#export-go', { type: 'submit', text: 'Export MP4' }),
    cancel: h('button', { type: 'button', text: 'Cancel', hidden: true }),
    bar: h('progress#export-progress', { max: 1, value: 0, hidden: true }),
    status: h('p.muted#export-status'),
    box: msgBox(),
  };
  const quick = [1, 10, 60].map((m) => h('button', { type: 'button', text: `Last ${m < 60 ? m + ' min' : '1 h'}`,
    onclick: () => ((f.end.value = localInput(Date.now())), (f.start.value = localInput(Date.now() - m * 60000))) }));
  let abort = null;
  const submit = (e) => {
    e.preventDefault();
    abort = new AbortController();
    busy(f.btn, f.box, () => runExport(f, abort));
  };
  f.cancel.addEventListener('click', () => abort && abort.abort());
  append(view, pageHead('Export'), h('form.card#export-form', { onsubmit: submit },
    h('p', { text: 'One MP4 file of a span of a stream (at most 24 h), from the keyframe before its start.' }),
    field('Stream', f.sel), h('div.row', {}, field('From', f.start), field('To', f.end)), h('div.tools', {}, quick),
    f.box, h('div.tools', {}, f.btn, f.cancel), f.bar, f.status));
  return () => abort && abort.abort();
}

async function runExport(f, abort) {
  const start = new Date(f.start.value).getTime();
  const end = new Date(f.end.value).getTime();
  if (!(end > start)) throw new Error('"To" must be after "From".');
  const q = new URLSearchParams({ stream: f.sel.value, start: iso(start), end: iso(end) });
  const url = '/api/export.mp4?' + q;
  f.status.textContent = 'Asking the recorder…';
  f.cancel.hidden = false;
  try {
    const r = await Ox.checkResponse(await fetch(url, { credentials: 'same-origin', signal: abort.signal }));
    const total = Number(r.headers.get('Content-Length')) || 0;
    const name = fileName(r.headers.get('Content-Disposition')) || `${f.sel.value}.mp4`;
    const note = r.headers.get('X-OxiNVR-Export-Truncated');
    if (total > 1536 * 1048576) return bigExport(f, url, name, total, abort);
    const blob = await readWithProgress(r, total, f);
    saveBlob(blob, name);
    f.status.textContent = `Saved ${name} (${fmtBytes(blob.size)}).` + (note ? ` Cut short: ${note}.` : '');
  } catch (e) {
    if (e.name === 'AbortError') f.status.textContent = 'Cancelled.';
    else throw e;
  } finally {
    f.cancel.hidden = true;
  }
}

// Reads a response body with a progress bar; the blob of its bytes.
async function readWithProgress(r, total, f) {
  const reader = r.body.getReader();
  const chunks = [];
  let got = 0;
  f.bar.hidden = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    if (total) f.bar.value = got / total;
    f.status.textContent = `Downloading… ${fmtBytes(got)}${total ? ` of ${fmtBytes(total)} (${Math.floor((got / total) * 100)} %)` : ''}`;
  }
  f.bar.value = 1;
  return new Blob(chunks, { type: 'video/mp4' });
}

// Too large to hold in the page: the browser downloads it itself.
function bigExport(f, url, name, total, abort) {
  abort.abort();
  f.status.textContent = `The file is ${fmtBytes(total)}; your browser downloads it directly.`;
  h('a', { href: url, download: name }).click();
}

function fileName(disposition) {
  const m = /filename="([^"]+)"/.exec(disposition || '');
  return m ? m[1] : null;
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
