// admin.js: the pages that manage the recorder. Streams (list, add/edit form
// with a connection test, enable/disable, delete), System (memory, disk,
// rings, a bitrate chart per stream, logs), Settings (the configuration in
// effect, read-only, and OTA upload), Integrations (MQTT, webhooks with a
// test button, the metrics URL), Users, and the user's own Account
// (password, TOTP enrolment with its QR code, API keys, sessions).
'use strict';

function table(id, headers, rows) {
  return h('div.table-wrap', {}, labelCells(h('table.list' + (id ? '#' + id : ''), {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { text: t })))), h('tbody', {}, rows))));
}

const td = (text) => h('td', { text: text === null || text === undefined ? '—' : String(text) });

// An inline "are you sure" next to a button: the action runs on the second click.
function confirmButton(text, question, action, extra) {
  const box = h('span.confirm', { hidden: true }, question, ' ', extra || null,
    h('button.danger', { type: 'button', text: 'Yes, ' + text.toLowerCase(), onclick: () => action(box) }),
    h('button', { type: 'button', text: 'No', onclick: () => (box.hidden = true) }));
  const btn = h('button.danger', { type: 'button', text, onclick: () => (box.hidden = false) });
  return h('span.confirm-wrap', {}, btn, box);
}

// ---- streams ----

Ox.page('streams', { title: 'Streams', role: 'operator', nav: true, render: renderStreams });

async function renderStreams(view, params) {
  const edit = params.get('edit');
  const formBox = h('div');
  const list = h('div');
  append(view, pageHead('Streams', h('a.button#discover', { href: '#/streams?discover=1', text: 'Discover cameras' }),
    h('a.button.primary#add-stream', { href: '#/streams?new=1', text: 'Add stream' })), formBox, list);
  if (edit || params.get('new')) append(formBox, await streamForm(edit));
  if (params.get('discover')) append(formBox, discoverCard());
  await drawStreamList(list);
  const timer = setInterval(() => drawStreamList(list).catch(() => {}), 3000);
  return () => clearInterval(timer);
}

async function drawStreamList(list) {
  const streams = await listStreams();
  if (!streams.length) return clear(list, h('p.empty', { text: 'No streams yet: add a camera.' }));
  clear(list, table('streams', ['Name', 'State', 'Rate', 'Video', 'Stored', 'Recording', ''], streams.map(streamRow)));
}

function streamRow(s) {
  const st = s.status || {};
  const wait = st.memory_wait;
  const state = h('td', {}, h('span.pill.' + (st.state || 'stopped'), { text: (st.state || 'stopped').replace(/_/g, ' ') }),
    wait ? h('small.note', { text: ` needs ${fmtBytes(wait.needs_bytes)}, ${fmtBytes(wait.free_bytes)} free in the memory budget` }) : null,
    st.stopped_for ? h('small.note', { text: ' ' + st.stopped_for }) : null,
    st.last_error ? h('small.error-text', { text: ' ' + st.last_error }) : null);
  const toggle = h('button', { type: 'button', text: s.enabled ? 'Disable' : 'Enable',
    onclick: (e) => busy(e.target, null, () => saveEnabled(s.name, !s.enabled)) });
  const actions = h('td.actions', {}, toggle, h('a.button', { href: `#/streams?edit=${encodeURIComponent(s.name)}`, text: 'Edit' }),
    h('a.button.zones-link', { href: `#/zones?stream=${encodeURIComponent(s.name)}`, text: 'Zones' }),
    can('admin') ? deleteStreamButton(s) : null);
  return h('tr', { 'data-stream': s.name }, td(s.name), state,
    td(st.state === 'streaming' ? `${st.fps} fps, ${Math.round(st.bitrate_kbps)} kbit/s` : '—'),
    td(st.codec ? `${st.codec} ${st.width}x${st.height}${st.audio ? ' + ' + st.audio : ''}` : '—'),
    td(`${fmtBytes(s.storage.bytes)} in ${s.storage.segments} file(s)`), td(s.record), actions);
}

async function saveEnabled(name, enabled) {
  await api('PUT', `/api/streams/${encodeURIComponent(name)}`, { enabled });
  toast(`${name} ${enabled ? 'enabled' : 'disabled'}`);
  route();
}

function deleteStreamButton(s) {
  const purge = h('input', { type: 'checkbox', name: 'purge' });
  const label = h('label.inline', {}, purge, ' and its recordings');
  return confirmButton('Delete', `Delete ${s.name}?`, (box) => busy(null, null, async () => {
    await api('DELETE', `/api/streams/${encodeURIComponent(s.name)}${purge.checked ? '?purge=true' : ''}`);
    box.hidden = true;
    toast(`${s.name} deleted`);
    route();
  }), label);
}

const STREAM_NUMBERS = [
  ['retention_days', 'Keep recordings (days)', 'Empty: until space runs out.'],
  ['max_storage_mb', 'Storage limit (MB)', 'Empty: no per-stream limit.'],
  ['bitrate_kbps', 'Expected bitrate (kbit/s)', 'Sizes the live ring buffer.'],
  ['priority', 'Priority', 'Higher starts first.', 0],
  ['pre_seconds', 'Before an event (s)', 'Events mode: kept in the ring, recorded when an event starts.', 5],
  ['post_seconds', 'After an event (s)', 'Events mode: recorded after the last event ended.', 10],
  ['event_retention_days', 'Keep event recordings (days)', 'At least as long as the others.', 30],
];

async function streamForm(name) {
  const s = name ? await api('GET', `/api/streams/${encodeURIComponent(name)}`) : { enabled: true, record: 'continuous', priority: 0 };
  const f = {
    name: h('input', { name: 'name', value: s.name || '', required: true, disabled: !!name }),
    url: h('input', { name: 'url', value: s.url || '', required: true, placeholder: 'rtsp://user:password@camera/stream', autocapitalize: 'none' }),
    sub_url: h('input', { name: 'sub_url', value: s.sub_url || '', placeholder: 'rtsp://user:password@camera/sub', autocapitalize: 'none' }),
    snapshot_url: h('input', { name: 'snapshot_url', value: s.snapshot_url || '', placeholder: 'http://user:password@camera/snapshot.jpg', autocapitalize: 'none' }),
    enabled: h('input', { type: 'checkbox', name: 'enabled', checked: s.enabled }),
    record: h('select', { name: 'record' }, ['continuous', 'events', 'off'].map((m) => h('option', { value: m, selected: s.record === m, text: m }))),
  };
  for (const [k] of STREAM_NUMBERS) f[k] = h('input', { type: 'number', min: 0, name: k, value: s[k] ?? '' });
  const box = msgBox();
  const probeBox = msgBox();
  const save = h('button.primary', { type: 'submit', text: name ? 'Save' : 'Add stream' });
  const test = h('button', { type: 'button', text: 'Test connection', onclick: (e) => busy(e.target, probeBox, () => probe(f.url.value, probeBox)) });
  const submit = (e) => {
    e.preventDefault();
    busy(save, box, () => saveStream(name, f));
  };
  return h('form.card#stream-form', { onsubmit: submit }, h('h2', { text: name ? `Edit ${name}` : 'New stream' }),
    h('div.row', {}, field('Name', f.name, 'Letters, digits, - and _.'), field('RTSP URL', f.url, name ? 'The password shows as ***; leave it to keep it.' : null)),
    h('div.row', {}, field('Sub stream URL', f.sub_url, 'Optional: the camera\'s small stream, for detection and the live grid.'),
      field('Snapshot URL', f.snapshot_url, 'Optional: the camera\'s JPEG snapshot, for detection of H.265 cameras.')),
    h('div.row', {}, h('label.inline', {}, f.enabled, ' Enabled'), field('Recording', f.record)),
    h('div.row', {}, STREAM_NUMBERS.map(([k, label, hint]) => field(label, f[k], hint))),
    probeBox, box, h('div.tools', {}, save, test, h('a.button', { href: '#/streams', text: 'Cancel' })));
}

function streamBody(f) {
  const body = { url: f.url.value.trim(), enabled: f.enabled.checked, record: f.record.value };
  for (const k of ['sub_url', 'snapshot_url']) body[k] = f[k].value.trim() || null;
  for (const [k, , , empty] of STREAM_NUMBERS) {
    const v = f[k].value.trim();
    body[k] = v === '' ? (empty ?? null) : Number(v);
  }
  return body;
}

async function saveStream(name, f) {
  const body = streamBody(f);
  if (name) await api('PUT', `/api/streams/${encodeURIComponent(name)}`, body);
  else await api('POST', '/api/streams', Object.assign({ name: f.name.value.trim() }, body));
  toast(`${name || f.name.value} saved`);
  go('#/streams');
}

async function probe(url, box) {
  if (url.includes(':***@')) throw new Error('Type the password into the URL to test it.');
  box.show('Connecting…', 'info');
  const r = await api('POST', '/api/probe', { url, timeout_ms: 8000 });
  if (!r.ok) throw new Error(`Connection failed: ${r.error}`);
  const v = r.video || {};
  const a = r.audio ? `, audio ${r.audio.codec || ''}` : ', no audio';
  box.show(`Connected: ${v.codec || 'video'} ${v.width || '?'}x${v.height || '?'}${a}.`, 'ok');
}

// ---- ONVIF: discover, probe with credentials, add a profile as a stream ----

function discoverCard() {
  const box = msgBox();
  const found = h('div');
  const f = {
    address: h('input', { name: 'address', placeholder: '192.168.1.20 or http://host/onvif/device_service', autocapitalize: 'none' }),
    username: h('input', { name: 'username', autocomplete: 'off', autocapitalize: 'none' }),
    password: h('input', { name: 'password', type: 'password', autocomplete: 'new-password' }),
  };
  const profiles = h('div');
  const search = h('button', { type: 'button', text: 'Search the network', onclick: (e) => busy(e.target, box, async () => {
    box.show('Searching…', 'info');
    const r = await api('POST', '/api/onvif/discover', {});
    box.hide();
    if (!r.devices.length) return clear(found, h('p.empty', { text: 'No ONVIF camera answered. Type its address below.' }));
    clear(found, table('onvif-devices', ['Camera', 'Model', 'Address', ''], r.devices.map((d) => h('tr', {}, td(d.name),
      td(d.hardware), td(d.address), h('td.actions', {}, h('button', { type: 'button', text: 'Use',
        onclick: () => { f.address.value = d.address; f.username.focus(); } }))))));
  }) });
  const show = h('button.primary', { type: 'submit', text: 'Show profiles' });
  const submit = (e) => {
    e.preventDefault();
    busy(show, box, async () => clear(profiles, profileList(await api('POST', '/api/onvif/probe', creds(f)), f)));
  };
  return h('form.card#discover-form', { onsubmit: submit }, h('h2', { text: 'Discover cameras' }), h('div.tools', {}, search), found,
    h('div.row', {}, field('Camera address', f.address), field('User', f.username), field('Password', f.password)),
    box, h('div.tools', {}, show, h('a.button', { href: '#/streams', text: 'Cancel' })), profiles);
}

const creds = (f) => ({ address: f.address.value.trim(), username: f.username.value, password: f.password.value });

function profileList(d, f) {
  const box = msgBox();
  const name = h('input', { name: 'stream-name', required: true, value: (d.device.model || 'camera').replace(/[^A-Za-z0-9_-]/g, '-').toLowerCase() });
  const pick = d.profiles.map((p, i) => h('input', { type: 'radio', name: 'profile', value: p.token, checked: i === 0 }));
  const rows = d.profiles.map((p, i) => h('tr', {}, h('td', {}, h('label.inline', {}, pick[i], ' ' + p.name)),
    td(`${p.encoding || ''} ${p.width || '?'}x${p.height || '?'}`), td(p.ptz ? 'PTZ' : ''), td(p.stream_uri)));
  // The camera's own motion events (ONVIF PullPoint) open motion events here: only offered
  // when it has an Events service; off by default (the box's own detection may be wanted).
  const events = h('input', { type: 'checkbox', name: 'onvif-events' });
  const eventsRow = d.services.events
    ? h('label.inline#onvif-events', {}, events, ' Use the camera\'s motion events (ONVIF)') : null;
  const add = h('button.primary#onvif-add', { type: 'button', text: 'Add stream', onclick: (e) => busy(e.target, box, async () => {
    const i = pick.findIndex((r) => r.checked);
    const p = d.profiles[i];
    const c = creds(f);
    await api('POST', '/api/streams', { name: name.value.trim(), url: withCreds(p.stream_uri, c.username, c.password) });
    await api('PUT', `/api/streams/${encodeURIComponent(name.value.trim())}/onvif`,
      Object.assign({ profile: p.token, events: events.checked }, c));
    toast(`${name.value} added`);
    go('#/streams');
  }) });
  return h('div#onvif-profiles', {}, h('p', { text: `${d.device.manufacturer} ${d.device.model}, firmware ${d.device.firmware}` }),
    table('onvif-profile-list', ['Profile', 'Video', '', 'Stream'], rows), h('div.row', {}, field('Stream name', name)), eventsRow,
    box, h('div.tools', {}, add));
}

// An RTSP URI from the camera has no credentials: it wants the ONVIF ones.
function withCreds(uri, user, password) {
  if (!user || /^rtsp:\/\/[^/]*@/.test(uri)) return uri;
  return uri.replace(/^rtsp:\/\//, `rtsp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@`);
}

// ---- system ----

Ox.page('system', { title: 'System', role: 'operator', nav: true, render: renderSystem });

async function renderSystem(view) {
  const info = h('div.cards#system-info');
  const charts = h('div.cards#bitrate-charts');
  const logs = h('div');
  append(view, pageHead('System'), info, h('h2', { text: 'Received bitrate per stream (kbit/s, last 2 min)' }), charts, logs);
  const tick = () => api('GET', '/api/system').then((s) => {
    drawSystem(info, s);
    drawRates(charts, s.streams);
  }).catch((e) => clear(info, h('p.msg.error', { text: e.message })));
  await tick();
  if (can('admin')) drawLogs(logs);
  const timer = setInterval(tick, 2000);
  return () => clearInterval(timer);
}

function card(title, ...rows) {
  return h('section.card', {}, h('h2', { text: title }), h('dl', {}, rows));
}

const kv = (k, v) => [h('dt', { text: k }), h('dd', {}, v)];

// A bar filled with the used share, and a label that says so.
function usedMeter(used, total, text) {
  const pct = total ? Math.round((used / total) * 1000) / 10 : 0;
  return h('span.meter', {}, h('meter', { min: 0, max: total || 1, value: used }),
    ` ${pct} % used: ${text}`);
}

function drawSystem(info, s) {
  const m = s.memory, p = m.process, d = s.disk;
  const heap = Object.entries(m.heap_by_subsystem).map(([k, v]) => kv(`Heap, ${k}`, fmtBytes(v)));
  const heapTotal = Object.values(m.heap_by_subsystem).reduce((a, b) => a + b, 0);
  const memUsed = p.mem_total - p.mem_available;
  clear(info,
    card('Recorder', kv('Version', s.version), kv('Firmware', s.firmware || '—'), kv('Up', fmtDuration(s.uptime_s * 1000)),
      kv('Started', fmtIso(s.started)), kv('Live viewers', s.live_clients)),
    card('Memory of the recorder', kv('RSS', `${fmtBytes(p.rss)} (peak ${fmtBytes(p.peak_rss)})`), kv('PSS', fmtBytes(p.pss)),
      kv('Threads', p.threads), kv('Rings', fmtBytes(m.rings_bytes)), kv('Heap', fmtBytes(heapTotal)), heap),
    card('Machine memory', kv('Used', usedMeter(memUsed, p.mem_total,
      `${fmtBytes(memUsed)} of ${fmtBytes(p.mem_total)}, ${fmtBytes(p.mem_available)} available`))),
    pressureCard(m.pressure),
    card('Disk', kv('Data', d.data_dir), kv('Recordings', fmtBytes(d.recordings_bytes)),
      d.error ? kv('Error', d.error) : kv('Used', usedMeter(d.total_bytes - d.free_bytes, d.total_bytes,
        `${fmtBytes(d.total_bytes - d.free_bytes)} of ${fmtBytes(d.total_bytes)}, ${fmtBytes(d.free_bytes)} free`))),
    card('Rings (recent video in memory)', s.streams.map((r) => kv(r.name, usedMeter(r.ring.used_bytes, r.ring.capacity,
      `${fmtBytes(r.ring.used_bytes)} of ${fmtBytes(r.ring.capacity)}, ${r.ring.evictions} evicted`)))),
    s.go2rtc ? go2rtcCard(s.go2rtc) : null,
    s.replicate ? replicateCard(s.replicate) : null);
}

// Replication to the bucket ([replicate]): what waits, what went up, the last error.
function replicateCard(r) {
  const oldest = r.oldest_pending_ms == null ? 'nothing waits' : `since ${fmtIso(new Date(r.oldest_pending_ms).toISOString())}`;
  return card('Replication', kv('Bucket', `${r.bucket} at ${r.endpoint}, under ${r.prefix}`), kv('State', r.state),
    kv('Backlog', `${r.backlog_segments} segment(s), ${fmtBytes(r.backlog_bytes)}, ${oldest}; ${r.backlog_events} event snapshot(s)`),
    kv('Uploaded since start', `${r.uploaded_segments} segment(s), ${fmtBytes(r.uploaded_bytes)}; ${r.uploaded_events} event snapshot(s)`),
    r.deleted_unreplicated ? kv('Deleted before upload (disk full)', r.deleted_unreplicated) : null,
    r.last_error ? kv('Last error', r.last_error) : null);
}

// go2rtc as OxiNVR runs it: state, process, restarts and why it last stopped.
function go2rtcCard(g) {
  const state = g.state === 'backoff' ? `restarting in ${Math.ceil(g.backoff_ms / 1000)} s` : g.state;
  return h('section.card#go2rtc', {}, h('h2', { text: 'go2rtc (WebRTC live view)' }), h('dl', {}, [
    kv('State', state),
    kv('Process', g.pid ? `pid ${g.pid}${g.version ? `, version ${g.version}` : ''}` : '—'),
    kv('Memory', g.rss_bytes != null ? usedMeter(g.rss_bytes, g.max_rss_bytes,
      `${fmtBytes(g.rss_bytes)} of its ${fmtBytes(g.max_rss_bytes)} limit`) : `limit ${fmtBytes(g.max_rss_bytes)}`),
    kv('Running since', g.running_since ? fmtIso(g.running_since) : '—'),
    kv('Streams', String(g.streams)),
    kv('Restarts', String(g.restarts)),
    kv('Last stop', g.last_error ? `${g.last_error} (${fmtIso(g.last_error_at)})` : '—'),
  ]));
}

// The memory pressure ladder: the step, why, since when, what it did, how often.
function pressureCard(pr) {
  if (!pr) return null;
  const sw = pr.swap;
  const counts = pr.steps.slice(1).map((name, i) => `${i + 1} ${name}: ${pr.entered[i + 1]}`).join('; ');
  return h('section.card#memory-pressure', {}, h('h2', { text: 'Memory pressure' }), h('dl', {},
    kv('Step', h('span.pill.' + (pr.step ? 'backoff' : 'streaming'), { text: `${pr.step}: ${pr.name}` })),
    kv('Why', pr.why), kv('Since', fmtIso(pr.since)), pr.last_action ? kv('Last action', pr.last_action) : null,
    pr.read_error ? kv('Error', pr.read_error) : null,
    kv('Swap', sw.unusable || `${sw.on ? 'on' : 'off'}: ${sw.file} (${fmtBytes(sw.bytes)})${sw.last_error ? ', ' + sw.last_error : ''}`),
    kv('Times entered', counts)));
}

// One chart per stream, from the server's last 2 min of samples (so it has a past at once).
function drawRates(charts, streams) {
  for (const s of streams) {
    let c = charts.querySelector(`canvas[data-stream="${CSS.escape(s.name)}"]`);
    if (!c) {
      c = h('canvas.chart', { 'data-stream': s.name });
      charts.append(h('section.card', {}, h('h3', { text: s.name }), c));
    }
    c.samples = s.bitrate_history; // for the browser tests
    Ox.drawChart(c, s.bitrate_history, '#4fa3ff', 'kbit/s', 120000);
  }
  for (const c of charts.querySelectorAll('canvas')) {
    if (!streams.some((s) => s.name === c.dataset.stream)) c.closest('section').remove();
  }
}

async function drawLogs(box) {
  const pre = h('pre.logs#logs', { text: 'Loading…' });
  const load = async () => {
    try {
      pre.textContent = (await api('GET', '/api/system/logs?lines=200')).lines.join('\n') || '(empty)';
      pre.scrollTop = pre.scrollHeight;
    } catch (e) {
      pre.textContent = `Logs unavailable: ${e.message}`;
    }
  };
  append(box, pageHead('Log', h('button', { type: 'button', text: 'Refresh', onclick: load })), pre);
  await load();
}

// ---- settings ----

Ox.page('settings', { title: 'Settings', role: 'admin', nav: true, render: renderSettings });

async function renderSettings(view) {
  const conf = h('div#settings');
  append(view, pageHead('Settings'), h('p.note', { text:
    'The configuration in effect, without secrets. Everything but the streams is read from the configuration file at start: edit the file and restart the recorder to change it.' }),
    conf, await tlsCard(), await otaCard());
  try {
    const { config, streams } = await api('GET', '/api/settings');
    const entries = Object.entries(config).filter(([k]) => k !== 'streams');
    const scalars = entries.filter(([, v]) => v === null || typeof v !== 'object');
    clear(conf, streamSettings(streams),
      scalars.length ? h('section.card', {}, h('dl', {}, scalars.map(([k, v]) => kv(k === 'source' ? 'read from' : k, show(v))))) : null,
      entries.filter(([, v]) => v !== null && typeof v === 'object').map(([k, v]) => settingsSection(k, v)));
  } catch (e) {
    clear(conf, h('p.msg.error', { text: `Settings unavailable: ${e.message}` }));
  }
}

const STREAM_KEYS = ['url', 'enabled', 'record', 'pre_seconds', 'post_seconds', 'retention_days', 'event_retention_days', 'max_storage_mb', 'priority', 'bitrate_kbps'];

// Streams as they run, where each came from, and what a restart puts back.
function streamSettings(streams) {
  const rows = streams.map((s) => h('tr', { 'data-stream': s.name }, td(s.name),
    h('td', {}, h('span.badge', { text: s.source === 'api' ? 'API' : 'config file' })),
    STREAM_KEYS.map((k) => streamValue(s, k))));
  return h('section.card#stream-settings', {}, h('h2', { text: 'Streams in effect' }),
    h('p.muted', { text: 'Streams of the configuration file are written from the file at every start: a change made on the Streams page (or through the API) to one of them lasts until the next restart unless it is made in the file too; those values are marked "until restart". Streams added on the Streams page are kept.' }),
    streams.length ? table('stream-settings-table', ['Stream', 'Source'].concat(STREAM_KEYS), rows) : h('p.muted', { text: 'none' }));
}

function streamValue(s, k) {
  if (!s.in_effect) return h('td.wrap', {}, h('span.muted', { text: `deleted; the file brings ${show(s.file[k])} back at restart` }));
  const cell = h('td', { 'data-key': k, text: show(s.in_effect[k]) });
  if (s.restart_resets.includes(k)) {
    cell.classList.add('wrap');
    cell.append(h('small.until-restart', { text: ` until restart (file: ${show(s.file[k])})` }));
  }
  return cell;
}

function settingsSection(name, value) {
  if (Array.isArray(value)) {
    const keys = [...new Set(value.flatMap((o) => Object.keys(o || {})))];
    return h('section.card', {}, h('h2', { text: `[[${name}]]` }),
      value.length ? table(null, keys, value.map((o) => h('tr', {}, keys.map((k) => td(show(o[k])))))) : h('p.muted', { text: 'none' }));
  }
  return h('section.card', {}, h('h2', { text: `[${name}]` }), h('dl', {}, Object.entries(value).map(([k, v]) => kv(k, show(v)))));
}

const show = (v) => (v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v));

// HTTPS: the certificate's SHA-256 fingerprint, to compare with what the
// browser shows (and the UART shell's `status`), and an upload of one's own pair.
async function tlsCard() {
  const info = h('dl#tls-info');
  const cert = h('textarea', { name: 'certificate', rows: 4, placeholder: '-----BEGIN CERTIFICATE-----' });
  const key = h('textarea', { name: 'private_key', rows: 4, placeholder: '-----BEGIN PRIVATE KEY-----' });
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Upload certificate and key' });
  const draw = (t) => clear(info, t.enabled
    ? [kv('SHA-256 fingerprint', h('code#tls-fingerprint', { text: t.fingerprint_sha256 })), kv('subject', t.subject),
      kv('valid until', t.not_after), kv('source', t.source)]
    : kv('HTTPS', 'off (web.tls = false in the configuration file)'));
  let t;
  try {
    t = await api('GET', '/api/system/tls');
    draw(t);
  } catch (e) {
    clear(info, h('p.msg.error', { text: `Certificate unavailable: ${e.message}` }));
  }
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      draw(await api('PUT', '/api/system/tls', { certificate: cert.value, private_key: key.value }));
      key.value = '';
      box.show('Installed: new connections use it (reload the page to see it).', 'ok');
    });
  };
  const form = t && t.enabled ? [field('Certificate (PEM, chain with the leaf first)', cert), field('Private key (PEM)', key), box, btn] : [];
  return h('form.card#tls', { onsubmit: submit }, h('h2', { text: 'HTTPS certificate' }), info, ...form);
}

async function otaCard() {
  const state = h('p#ota-state', { text: '…' });
  const file = h('input', { type: 'file', name: 'bundle', accept: '.bin,.oxi,application/octet-stream' });
  const reboot = h('input', { type: 'checkbox', name: 'reboot' });
  const bar = h('progress', { max: 1, value: 0, hidden: true });
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Upload and install' });
  const showState = async () => {
    try {
      state.textContent = otaText(await api('GET', '/api/system/ota'));
    } catch (e) {
      state.textContent = e.message;
    }
  };
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, () => uploadBundle(file.files[0], reboot.checked, bar, box, showState));
  };
  showState();
  return h('form.card#ota', { onsubmit: submit }, h('h2', { text: 'Firmware update (OTA)' }), state,
    field('Signed bundle', file), h('label.inline', {}, reboot, ' Reboot when installed'), bar, box, btn);
}

function otaText(s) {
  if (s.state === 'installing') return `Installing: ${s.phase || ''} ${s.percent ?? 0} %`;
  if (s.state === 'installed') return `Installed ${s.version} into slot ${s.slot}; ${s.reboot}.`;
  if (s.state === 'failed') return `The last update failed: ${s.error}`;
  return 'No update in progress.';
}

// XMLHttpRequest, because fetch() reports no upload progress.
function uploadBundle(blob, reboot, bar, box, showState) {
  if (!blob) throw new Error('Choose a bundle file first.');
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('POST', '/api/system/ota' + (reboot ? '?reboot=true' : ''));
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    if (Ox.state.csrf) x.setRequestHeader('X-CSRF-Token', Ox.state.csrf);
    bar.hidden = false;
    const poll = setInterval(showState, 1000);
    x.upload.onprogress = (e) => e.lengthComputable && (bar.value = e.loaded / e.total);
    x.onloadend = () => {
      clearInterval(poll);
      showState();
      let body = null;
      try {
        body = JSON.parse(x.responseText);
      } catch (e) {
        /* not JSON */
      }
      if (x.status >= 200 && x.status < 300) resolve(box.show(otaText(body || {}), 'ok'));
      else reject(new Error((body && body.error) || `upload failed (${x.status || 'network error'})`));
    };
    x.send(blob);
  });
}

// ---- integrations ----

Ox.page('integrations', { title: 'Integrations', role: 'operator', nav: true, render: renderIntegrations });

// MQTT's state, the webhooks with their last deliveries and a test button, the metrics URL.
async function renderIntegrations(view) {
  const mqtt = h('div#mqtt-status');
  const hooks = h('div#webhooks');
  const hookMsg = msgBox();
  const metrics = `${location.origin}/api/metrics`;
  append(view, pageHead('Integrations'), h('p.note', { text:
    'MQTT ([mqtt]) and webhooks ([[webhooks]]) are set in the configuration file; this page shows how they are doing.' }),
    h('h2', { text: 'MQTT' }), mqtt, h('h2', { text: 'Webhooks' }), hooks, hookMsg,
    h('h2', { text: 'Prometheus metrics' }), h('section.card#metrics-url', {}, h('dl', {},
      kv('URL', h('code', { text: metrics })),
      kv('Credential', 'a session, or an API key of a viewer (Authorization: Bearer oxk_...)'),
      kv('Without one', '[metrics] listen serves the same at /metrics on its own address'))));
  const tick = () => Promise.all([
    api('GET', '/api/system').then((s) => clear(mqtt, mqttCard(s.mqtt))),
    api('GET', '/api/webhooks').then((w) => drawHooks(hooks, hookMsg, w.webhooks)),
  ]).catch((e) => clear(hooks, h('p.msg.error', { text: e.message })));
  await tick();
  const timer = setInterval(tick, 2000);
  return () => clearInterval(timer);
}

function mqttCard(m) {
  if (!m) return h('p.empty', { text: 'Off: set [mqtt] url in the configuration file to publish to a broker (Home Assistant discovery included).' });
  const pill = m.state === 'connected' ? 'streaming' : m.state === 'connecting' ? 'connecting' : 'backoff';
  return h('section.card', {}, h('dl', {},
    kv('State', h('span.pill.' + pill, { text: m.state })), kv('Broker', m.broker), kv('Topics', `${m.topic_prefix}/…`),
    kv('Sessions', String(m.connects)), kv('Published', String(m.published)),
    kv('Waiting', `${m.queued} message(s), ${m.dropped} dropped`),
    kv('Last error', m.last_error ? h('span.error-text', { text: `${m.last_error} (${fmtDateTime(m.last_error_ms)})` }) : '—')));
}

const outcomeText = (o) => (o ? `${o.ok ? 'accepted' : o.error || 'failed'}${o.status ? ` (HTTP ${o.status})` : ''}` : '—');

function drawHooks(box, msg, hooks) {
  if (!hooks.length) return clear(box, h('p.empty', { text: 'None: add [[webhooks]] entries (url, secret) to the configuration file.' }));
  const rows = hooks.map((w) => {
    const pill = { idle: 'streaming', delivering: 'connecting', retrying: 'backoff' }[w.state] || 'stopped';
    const last = w.last;
    const test = h('button', { type: 'button', text: 'Send test event', disabled: w.state === 'failed',
      onclick: (e) => busy(e.target, msg, async () => {
        const r = await api('POST', `/api/webhooks/${encodeURIComponent(w.name)}/test`);
        msg.show(`Test event ${r.delivery} queued for ${w.name}.`, 'ok');
      }) });
    const recent = h('td.recent', {}, w.recent.length ? h('ul', {}, w.recent.map((o) =>
      h('li', { text: `${fmtClock(o.time_ms)} ${o.change}: ${outcomeText(o)}, ${o.attempts} attempt(s)` }))) : '—');
    return h('tr', { 'data-hook': w.name },
      h('td', {}, h('strong', { text: w.name }), h('code.url', { text: w.url }),
        w.streams.length ? h('small', { text: `only ${w.streams.join(', ')}` }) : null),
      h('td', {}, h('span.pill.' + pill, { text: w.state }), w.error ? h('small.error-text', { text: ' ' + w.error }) : null),
      td(`${w.delivered} delivered, ${w.failed} failed; ${w.queued} queued, ${w.dropped} dropped`),
      h('td.last', {}, last ? `${fmtDateTime(last.time_ms)}: ${outcomeText(last)}, attempt ${last.attempts}` : '—'),
      recent, h('td.actions', {}, test));
  });
  clear(box, table('webhook-list', ['Webhook', 'State', 'Deliveries', 'Last attempt', 'Recent', ''], rows));
}

// ---- users ----

Ox.page('users', { title: 'Users', role: 'admin', nav: true, render: renderUsers });

const roleSelect = (value) => h('select', { name: 'role' }, ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r, selected: r === value, text: r })));

async function renderUsers(view) {
  const list = h('div');
  append(view, pageHead('Users'), newUserForm(() => drawUsers(list)), list);
  await drawUsers(list);
}

async function drawUsers(list) {
  const { users } = await api('GET', '/api/users');
  clear(list, table('users', ['Name', 'Role', 'Two-factor', 'Created', 'Last login', ''], users.map((u) => userRow(u, list))));
}

function userRow(u, list) {
  const sel = roleSelect(u.role);
  const box = msgBox();
  const redraw = () => drawUsers(list);
  sel.addEventListener('change', () => busy(sel, box, async () => {
    await api('PUT', `/api/users/${encodeURIComponent(u.name)}`, { role: sel.value });
    toast(`${u.name} is now ${sel.value}`);
  }).then(redraw));
  const pw = h('input', { type: 'password', name: 'new-password', placeholder: 'new password', autocomplete: 'new-password' });
  const setPw = h('button', { type: 'button', text: 'Set password', onclick: (e) => busy(e.target, box, async () => {
    await api('PUT', `/api/users/${encodeURIComponent(u.name)}`, { password: pw.value });
    pw.value = '';
    toast(`Password of ${u.name} changed`);
  }) });
  const del = confirmButton('Delete', `Delete ${u.name}?`, () => busy(null, box, async () => {
    await api('DELETE', `/api/users/${encodeURIComponent(u.name)}`);
    toast(`${u.name} deleted`);
    redraw();
  }));
  return h('tr', { 'data-user': u.name }, td(u.name), h('td', {}, sel), td(u.totp ? 'on' : 'off'), td(fmtIso(u.created)),
    td(fmtIso(u.last_login)), h('td.actions', {}, pw, setPw, del, box));
}

function newUserForm(done) {
  const name = h('input', { name: 'username', required: true, autocomplete: 'off', autocapitalize: 'none' });
  const pass = h('input', { name: 'password', type: 'password', required: true, autocomplete: 'new-password' });
  const role = roleSelect('viewer');
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Add user' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      await api('POST', '/api/users', { username: name.value.trim(), password: pass.value, role: role.value });
      toast(`User ${name.value} added`);
      name.value = pass.value = '';
      await done();
    });
  };
  return h('form.card#new-user', { onsubmit: submit }, h('h2', { text: 'Add a user' }),
    h('div.row', {}, field('User name', name), field('Password', pass), field('Role', role)), box, btn);
}

// ---- account ----

Ox.page('account', { title: 'Account', role: 'viewer', nav: true, render: renderAccount });

async function renderAccount(view) {
  const u = Ox.state.user;
  append(view, pageHead('Account', h('button#logout', { type: 'button', text: 'Log out', onclick: Ox.logout })),
    h('p', { text: `Signed in as ${u.name} (${u.role}).` }));
  if (Ox.state.noAuth) return append(view, h('p.note', { text: 'This recorder has no logins enabled.' }));
  const keys = h('section.card#keys');
  const sessions = h('section.card#sessions');
  append(view, h('div.cards', {}, passwordForm(u), totpCard(u)), keys, sessions);
  await Promise.all([drawKeys(keys), drawSessions(sessions)]);
}

const userPath = (u, rest) => `/api/users/${encodeURIComponent(u.name)}${rest || ''}`;

function passwordForm(u) {
  const cur = h('input', { type: 'password', name: 'current_password', required: true, autocomplete: 'current-password' });
  const pw = h('input', { type: 'password', name: 'password', required: true, autocomplete: 'new-password' });
  const again = h('input', { type: 'password', name: 'confirm', required: true, autocomplete: 'new-password' });
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Change password' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      if (pw.value !== again.value) throw new Error('The two new passwords differ.');
      await api('PUT', userPath(u), { password: pw.value, current_password: cur.value });
      cur.value = pw.value = again.value = '';
      box.show('Password changed.', 'ok');
    });
  };
  return h('form.card#password-form', { onsubmit: submit }, h('h2', { text: 'Password' }),
    field('Current password', cur), field('New password', pw), field('New password again', again), box, btn);
}

function totpCard(u) {
  const el = h('section.card#totp');
  drawTotp(el, u);
  return el;
}

function drawTotp(el, u) {
  const box = msgBox();
  if (u.totp) {
    const off = h('button.danger', { type: 'button', text: 'Turn off', onclick: (e) => busy(e.target, box, async () => {
      Ox.state.user = Object.assign({}, u, await api('DELETE', userPath(u, '/totp')), { totp: false });
      drawTotp(el, Ox.state.user);
    }) });
    return clear(el, h('h2', { text: 'Two-factor login' }), h('p', { text: 'On: logging in asks for a code from your authenticator app.' }), box, off);
  }
  const on = h('button.primary#totp-start', { type: 'button', text: 'Set up', onclick: (e) => busy(e.target, box, async () => {
    enrol(el, u, await api('POST', userPath(u, '/totp')));
  }) });
  clear(el, h('h2', { text: 'Two-factor login' }), h('p', { text: 'Off. Use an authenticator app (TOTP) for a second factor.' }), box, on);
}

function enrol(el, u, t) {
  const code = h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6, required: true });
  const box = msgBox();
  const btn = h('button.primary', { type: 'submit', text: 'Confirm' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      const user = await api('POST', userPath(u, '/totp/confirm'), { code: code.value.trim() });
      Ox.state.user = Object.assign({}, u, user, { totp: true });
      toast('Two-factor login is on');
      drawTotp(el, Ox.state.user);
    });
  };
  const qr = h('img.qr#totp-qr', { alt: 'TOTP QR code', src: 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(t.qr_svg) });
  clear(el, h('h2', { text: 'Two-factor login' }), h('p', { text: 'Scan the code with your authenticator app, or type the secret, then enter the 6-digit code it shows.' }),
    qr, h('p', {}, 'Secret: ', h('code#totp-secret', { text: t.secret })),
    h('form', { onsubmit: submit }, field('Code', code), box, btn));
  code.focus();
}

async function drawKeys(el) {
  const { keys } = await api('GET', '/api/keys');
  const name = h('input', { name: 'key-name', required: true, placeholder: 'e.g. home-assistant' });
  const shown = h('div');
  const box = msgBox();
  const btn = h('button', { type: 'submit', text: 'Create key' });
  const submit = (e) => {
    e.preventDefault();
    busy(btn, box, async () => {
      const k = await api('POST', '/api/keys', { name: name.value.trim() });
      await drawKeys(el);
      el.querySelector('.new-key').append(newKey(k));
    });
  };
  const rows = keys.map((k) => h('tr', {}, td(k.name), td(k.user), td(k.role), td(k.prefix + '…'), td(fmtIso(k.created)), td(fmtIso(k.last_used)),
    h('td', {}, confirmButton('Delete', `Delete key ${k.name}?`, () => busy(null, box, async () => {
      await api('DELETE', `/api/keys/${encodeURIComponent(k.id)}`);
      await drawKeys(el);
    })))));
  clear(el, h('h2', { text: 'API keys' }), h('p.muted', { text: 'For scripts and home automation: send "Authorization: Bearer <key>". A key has its owner\'s role.' }),
    keys.length ? table('key-list', ['Name', 'User', 'Role', 'Key', 'Created', 'Last used', ''], rows) : h('p.muted', { text: 'No keys.' }),
    h('div.new-key', {}, shown), h('form.row', { onsubmit: submit }, field('New key name', name), btn), box);
}

function newKey(k) {
  const code = h('code.secret', { text: k.key });
  const copy = h('button', { type: 'button', text: 'Copy', onclick: () => copyText(k.key) });
  return h('div.msg.ok', {}, h('p', { text: `Key "${k.name}" created. Copy it now: it is not shown again.` }), code, ' ', copy);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied');
  } catch (e) {
    toast('Copying was refused by the browser; select the key and copy it by hand.', 'error');
  }
}

async function drawSessions(el) {
  const { sessions } = await api('GET', '/api/auth/sessions');
  const box = msgBox();
  const rows = sessions.map((s) => h('tr', { class: s.current ? 'current' : null }, td(s.user), td(fmtIso(s.created)), td(fmtIso(s.last_seen)),
    td(fmtIso(s.expires)), td(s.address), h('td.wrap', { text: s.user_agent }), h('td', {}, s.current ? h('span.badge', { text: 'this browser' }) : null,
      h('button', { type: 'button', text: 'Revoke', onclick: (e) => busy(e.target, box, () => revoke(s, el)) }))));
  clear(el, h('h2', { text: 'Sessions' }), table('session-list', ['User', 'Created', 'Last seen', 'Expires', 'Address', 'Browser', ''], rows), box);
}

async function revoke(s, el) {
  await api('DELETE', `/api/auth/sessions/${encodeURIComponent(s.id)}`);
  if (s.current) {
    setAuth({ user: null });
    return go('#/login');
  }
  await drawSessions(el);
}
