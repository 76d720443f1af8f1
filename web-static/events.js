// events.js: what detection saw, in the page. The Events view (thumbnails in
// a grid, filters by stream, kind, label and time, paging, new events pushed
// by GET /api/events/stream, a click plays the event's clip with its
// pre-buffer), the per-stream detection switch (operator), the timeline's
// events lane (Ox.timelineEvents) and the live tiles' detection badges
// (Ox.watchDetections).
// One EventSource per view at most: each holds a web.max_live_clients slot, so
// the live grid opens one only when a shown stream detects, and falls back to
// polling when the recorder refuses it.
'use strict';

const EV_KINDS = ['motion', 'object', 'manual', 'external'];
// Events a page (`#/events?limit=N` sets another, 1..1000).
const EV_PAGE = 60;
// Seconds of the clip before the event's start (the ring's pre-buffer) and after its end.
const CLIP_PRE = 5, CLIP_POST = 5;

// The push of event changes: on(kind, event JSON) for began, ended, deleted.
// onFail(): the recorder refused or dropped it for good (EventSource gave up).
function eventPush(on, onFail) {
  const src = new EventSource('/api/events/stream');
  for (const t of ['began', 'ended', 'deleted']) {
    src.addEventListener(t, (m) => {
      let e = null;
      try {
        e = JSON.parse(m.data);
      } catch (err) {
        return;
      }
      on(t, e);
    });
  }
  src.addEventListener('error', () => src.readyState === EventSource.CLOSED && onFail && onFail());
  return src;
}

const evLength = (e) => (e.end_ms == null ? 'ongoing' : fmtDuration(e.end_ms - e.start_ms));
const evWhat = (e) => (e.kind === 'motion' || e.label === e.kind || !e.label ? e.kind : `${e.kind}: ${e.label}`);

// ---- the Events view ----

Ox.page('events', { title: 'Events', role: 'viewer', nav: true, render: renderEvents });

async function renderEvents(view, params) {
  const streams = await Ox.api('GET', '/api/streams').then((v) => v.streams);
  const f = eventFilters(streams, params);
  const v = { f, grid: h('div.event-grid#events-grid'), more: h('button#events-more', { type: 'button', text: 'Older events', hidden: true }),
    count: h('span.muted#events-count'), stage: eventStage(), cursor: null, shown: new Map(),
    limit: Math.min(1000, Math.max(1, Math.floor(Number(params.get('limit'))) || EV_PAGE)) };
  const load = () => loadEvents(v).catch((e) => clear(v.grid, h('p.msg.error', { text: e.message })));
  for (const el of [f.stream, f.kind, f.since, f.until]) el.addEventListener('change', load);
  f.label.addEventListener('change', load);
  f.clear.addEventListener('click', () => {
    f.label.value = f.since.value = f.until.value = f.kind.value = '';
    load();
  });
  v.more.addEventListener('click', () => busy(v.more, null, () => morePage(v)));
  append(view, h('div.page-head', {}, h('h1', { text: 'Events' }), h('div.tools#events-filters', {},
    f.stream, f.kind, f.label, h('label.ev-time', {}, 'From', f.since), h('label.ev-time', {}, 'To', f.until), f.clear)),
  detectionSwitches(streams), v.stage.el, h('p', {}, v.count), v.grid, h('div.tools', {}, v.more));
  await load();
  const push = eventPush((t, e) => pushed(v, t, e));
  return () => {
    push.close();
    v.stage.stop();
  };
}

function eventFilters(streams, params) {
  const p = (k) => params.get(k) || '';
  const input = (name, type, value, extra) => h('input', { name, type, value, ...extra });
  const f = {
    stream: h('select#events-stream', { name: 'stream', 'aria-label': 'Stream' }, h('option', { value: '', text: 'All streams' }),
      streams.map((s) => h('option', { value: s.name, text: s.name, selected: s.name === p('stream') }))),
    kind: h('select#events-kind', { name: 'kind', 'aria-label': 'Kind' }, h('option', { value: '', text: 'All kinds' }),
      EV_KINDS.map((k) => h('option', { value: k, text: k, selected: k === p('kind') }))),
    label: input('label', 'search', p('label'), { placeholder: 'Label', size: 8, 'aria-label': 'Label' }),
    since: input('since', 'datetime-local', p('since'), { step: 1 }),
    until: input('until', 'datetime-local', p('until'), { step: 1 }),
    clear: h('button', { type: 'button', text: 'All' }),
  };
  return f;
}

// The API's filter of the form: {stream, kind, label, since, until} without empty ones.
function filterQuery(f) {
  const q = {};
  for (const k of ['stream', 'kind']) if (f[k].value) q[k] = f[k].value;
  if (f.label.value.trim()) q.label = f.label.value.trim();
  for (const k of ['since', 'until']) {
    const ms = f[k].value ? new Date(f[k].value).getTime() : NaN;
    if (!Number.isNaN(ms)) q[k] = iso(ms);
  }
  return q;
}

async function loadEvents(v) {
  const q = filterQuery(v.f);
  const raw = Object.fromEntries(['stream', 'kind', 'label', 'since', 'until'].map((k) => [k, v.f[k].value]).filter((x) => x[1]));
  if (v.limit !== EV_PAGE) raw.limit = v.limit;
  history.replaceState(null, '', `#/events?${new URLSearchParams(raw)}`);
  v.query = q;
  const r = await Ox.api('GET', '/api/events?' + new URLSearchParams({ ...q, limit: v.limit }));
  v.shown.clear();
  clear(v.grid);
  addCards(v, r.events);
  setCursor(v, r.next_cursor);
}

async function morePage(v) {
  const r = await Ox.api('GET', '/api/events?' + new URLSearchParams({ ...v.query, limit: v.limit, cursor: v.cursor }));
  addCards(v, r.events);
  setCursor(v, r.next_cursor);
}

function setCursor(v, cursor) {
  v.cursor = cursor;
  v.more.hidden = !cursor;
  const n = v.shown.size;
  v.count.textContent = n ? `${n} event(s)${cursor ? ', newest first; more below' : ''}.` : 'No events match.';
}

function addCards(v, events, first) {
  for (const e of events) {
    if (v.shown.has(e.id)) continue;
    const card = eventCard(e, () => v.stage.play(e));
    v.shown.set(e.id, card);
    if (first) v.grid.prepend(card);
    else v.grid.append(card);
  }
}

// A thumbnail with the event's time, stream, kind/label and length; a click plays its clip.
function eventCard(e, play) {
  const pic = e.thumbnail_url
    ? h('img', { src: e.thumbnail_url, alt: `${e.stream} ${evWhat(e)}`, loading: 'lazy', decoding: 'async', width: 192, height: 108 })
    : h('div.no-pic', { text: evWhat(e) });
  const card = h('div.event-card', { 'data-id': e.id, 'data-kind': e.kind, role: 'button', tabindex: 0, title: 'Play the clip' },
    pic, h('div.event-meta', {},
      h('b', { text: fmtClock(e.start_ms) }), h('span.muted', { text: ` ${fmtDate(e.start_ms)}` }),
      h('div', {}, h('span.kind-dot'), `${e.stream} · ${evWhat(e)}`),
      h('div.muted.event-len', { text: evLength(e) + (e.score != null && e.kind !== 'manual' ? ` · ${Math.round(e.score * 100)} %` : '') })));
  card.addEventListener('click', play);
  card.addEventListener('keydown', (k) => (k.key === 'Enter' || k.key === ' ') && (k.preventDefault(), play()));
  card.dataset.ongoing = String(e.end_ms == null);
  return card;
}

// Does a pushed event belong in the list as filtered (newest page, no "To" in the past)?
function matches(q, e) {
  if ((q.stream && e.stream !== q.stream) || (q.kind && e.kind !== q.kind) || (q.label && e.label !== q.label)) return false;
  if (q.until && Date.parse(q.until) < e.start_ms) return false;
  return !(q.since && e.end_ms != null && e.end_ms < Date.parse(q.since));
}

function pushed(v, t, e) {
  const card = v.shown.get(e.id);
  if (t === 'deleted') {
    if (card) card.remove();
    v.shown.delete(e.id);
  } else if (card) {
    const fresh = eventCard(e, () => v.stage.play(e));
    card.replaceWith(fresh);
    v.shown.set(e.id, fresh);
  } else if (t === 'began' && v.query && matches(v.query, e)) {
    addCards(v, [e], true);
    v.shown.get(e.id).classList.add('new');
  } else return;
  setCursor(v, v.cursor);
}

// The player above the grid: the clip of the clicked event, from its pre-buffer.
function eventStage() {
  const video = h('video#events-player', { controls: true, playsinline: true, muted: true });
  const title = h('b');
  const el = h('div.event-stage', { hidden: true }, h('div.player-head', {}, title,
    h('button', { type: 'button', text: 'Close', onclick: () => stop() })), video);
  const stop = () => {
    video.removeAttribute('src');
    video.load();
    el.hidden = true;
  };
  const play = (e) => {
    title.textContent = `${e.stream} · ${evWhat(e)} · ${fmtDateTime(e.start_ms)} (${evLength(e)})`;
    el.hidden = false;
    video.src = `${e.clip_url}?pre=${CLIP_PRE}&post=${CLIP_POST}`;
    video.play().catch(() => {});
    el.scrollIntoView({ block: 'nearest' });
  };
  return { el, play, stop };
}

// ---- the detection switch (operator) ----

// A switch per detecting stream; viewers see the state only.
function detectionSwitches(streams) {
  const list = streams.filter((s) => s.detection && s.detection.detectors.length);
  if (!list.length) return null;
  return h('div.detect-switches#detect-switches', {}, h('span.muted', { text: 'Detection:' }), list.map(detectionSwitch));
}

function detectionSwitch(s) {
  const d = s.detection;
  const box = h('input', { type: 'checkbox', checked: d.enabled, disabled: !can('operator'), 'data-stream': s.name,
    'aria-label': `${s.name} detection` });
  const state = h('span.muted', { text: switchText(d) });
  box.addEventListener('change', () => busy(box, null, async () => {
    try {
      const now = await Ox.api('PUT', `/api/streams/${encodeURIComponent(s.name)}/detection`, { enabled: box.checked });
      box.checked = now.enabled;
      state.textContent = switchText(now);
      toast(`${s.name}: detection ${now.enabled ? 'on' : 'off'}`);
    } catch (e) {
      box.checked = !box.checked;
      throw e;
    }
  }));
  return h('label.switch', { title: d.problem || '' }, box, h('span', { text: `${s.name} (${d.detectors.join(' + ')})` }), state);
}

const switchText = (d) => (!d.enabled ? 'off' : d.problem ? 'cannot run' : d.in_motion ? 'motion now' : 'on');

// ---- the timeline's events lane ----

// The events of `stream` on the day starting at `day` (ms), oldest first, at most 2000
// (none when they cannot be read: the recordings still draw).
Ox.timelineEvents = async (stream, day) => {
  const q = { stream, since: iso(day), until: iso(day + 86400000), limit: 1000 };
  let out = [];
  try {
    for (let page = 0; page < 2; page++) {
      const r = await Ox.api('GET', '/api/events?' + new URLSearchParams(q));
      out = out.concat(r.events);
      if (!r.next_cursor) break;
      q.cursor = r.next_cursor;
    }
  } catch (e) {
    return [];
  }
  return out.reverse();
};

// ---- live tiles: a motion badge and the labels of objects in view ----

// Watches the detecting streams of the grid: their tiles get a badge while
// motion lasts and the labels of ongoing object events. Returns the cleanup.
Ox.watchDetections = (grid, streams) => {
  const names = new Set(streams.filter((s) => s.detection && s.detection.detectors.length).map((s) => s.name));
  if (!names.size) return () => {};
  const w = { grid, names, motion: new Map(), ongoing: new Map(), push: null, timer: null };
  for (const s of streams) if (names.has(s.name)) w.motion.set(s.name, s.detection);
  const poll = () => pollDetections(w).catch(() => {});
  poll();
  w.push = eventPush((t, e) => {
    if (!names.has(e.stream)) return;
    if (t === 'began' && e.end_ms == null) w.ongoing.set(e.id, e);
    else w.ongoing.delete(e.id);
    drawBadges(w);
  }, () => (w.push = null));
  // The push may be refused (no live-client slot): polling keeps the badges true meanwhile.
  w.timer = setInterval(poll, 4000);
  return () => {
    clearInterval(w.timer);
    if (w.push) w.push.close();
  };
};

async function pollDetections(w) {
  const now = Date.now();
  const [streams, events] = await Promise.all([Ox.api('GET', '/api/streams'),
    Ox.api('GET', '/api/events?' + new URLSearchParams({ since: iso(now - 1000), limit: 100 }))]);
  for (const s of streams.streams) if (w.names.has(s.name) && s.detection) w.motion.set(s.name, s.detection);
  // The list is the truth (a notice may have been dropped); the push only makes changes show sooner.
  w.ongoing.clear();
  for (const e of events.events) if (w.names.has(e.stream) && e.end_ms == null) w.ongoing.set(e.id, e);
  drawBadges(w);
}

function drawBadges(w) {
  for (const name of w.names) {
    const tile = w.grid.querySelector(`.tile[data-stream="${CSS.escape(name)}"] .overlay`);
    if (!tile) continue;
    const d = w.motion.get(name) || {};
    const open = [...w.ongoing.values()].filter((e) => e.stream === name).sort((a, b) => b.start_ms - a.start_ms);
    const motion = d.in_motion || open.some((e) => e.kind === 'motion');
    const labels = [...new Set(open.filter((e) => e.kind === 'object').map((e) => e.label))].slice(0, 3);
    let box = tile.querySelector('.detections');
    if (!box) box = append(tile, h('span.detections')).lastChild;
    clear(box, d.enabled === false ? h('span.badge.det-off', { text: 'detection off' }) : null,
      motion ? h('span.badge.motion', { text: 'motion' }) : null, labels.map((l) => h('span.badge.object', { text: l })));
    tile.parentElement.dataset.motion = String(!!motion);
    tile.parentElement.dataset.objects = labels.join(',');
  }
}
