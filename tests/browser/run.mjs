// run.mjs: OxiNVR's web page in headless Chromium against a running recorder
// (OXINVR_URL, fresh data dir: no user yet) that records a real test camera
// (stream OXINVR_STREAM, several short segments already on disk). The tests
// run in order (later ones use the accounts earlier ones made), each prints
// PASS or FAIL with the reason; the exit status is 1 if any failed.
// Screenshots of every page go to OXINVR_SCREENSHOTS (target/screenshots).
// scripts/test-browser starts the camera and the recorder and runs this.
import http from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  BASE, STREAM, SHOTS, launch, newPage, assert, until, sleep, shot, open, pageFetch, errorText, totp, ffprobe,
  decodesCleanly, pageProblems, layoutProblems,
} from './lib.mjs';

const ADMIN = { name: 'admin', pass: 'Admin-pass-2024' };
const VIEWER = { name: 'viewer1', pass: 'Viewer-pass-2024' };
const WORK = process.env.OXINVR_WORK || tmpdir();
// A stream of the camera's H.265 mount, if the recorder has one (OXINVR_H265_STREAM).
const H265 = process.env.OXINVR_H265_STREAM || '';
const S = {}; // shared between tests: browser, admin page, viewer page
// A second recorder whose clock reads 1970 (libfaketime), fresh data dir, recording STREAM.
const UNSET = process.env.OXINVR_UNSET_URL || '';
// The simulated ONVIF camera's HTTP address (tests/onvif-sim/sim.py: it records the SOAP it gets).
const ONVIF_SIM = process.env.OXINVR_ONVIF_SIM || '';
// The stream with motion detection on (the camera's moving ball).
const DETECT = process.env.OXINVR_DETECT_STREAM || '';

// The webhook receiver the recorder's `receiver` hook posts to (scripts/test-browser's config).
const HOOK_PORT = Number(process.env.OXINVR_HOOK_PORT || 0);
const HOOK_SECRET = 'browser-test-webhook-secret';

// ---- helpers ----

async function fillLogin(page, user, pass) {
  await page.waitForSelector('#login-form');
  await page.fill('#login-form input[name=username]', user);
  await page.fill('#login-form input[name=password]', pass);
  await page.click('#login-form button[type=submit]');
}

const ready = (page, hash) => page.waitForFunction((h) => document.querySelector('#view').dataset.ready === h, hash);

async function loginAs(page, who) {
  await page.goto(`${BASE}/#/login`);
  await fillLogin(page, who.name, who.pass);
  await ready(page, '#/live');
}

// Ox.api inside the page: its session and CSRF token.
const pageApi = (page, method, path, body) => page.evaluate(([m, p, b]) => Ox.api(m, p, b), [method, path, body]);

// Renders `hash` from scratch (a reload), as a user coming back to it would see it.
async function reload(page, hash) {
  await page.evaluate((h) => (location.hash = h), hash);
  await page.reload();
  await ready(page, hash);
}

// Seconds of an "HH:MM:SS" (or "Nd HH:MM:SS") duration.
function seconds(text) {
  const m = /(?:(\d+)d )?(\d+):(\d\d):(\d\d)/.exec(text);
  return m ? (Number(m[1] || 0) * 86400) + m[2] * 3600 + m[3] * 60 + Number(m[4]) : NaN;
}

// Closed recordings of today for the stream, oldest first (through the page's session).
async function closedRecordings(page) {
  const day = new Date();
  day.setHours(0, 0, 0, 0);
  const q = new URLSearchParams({ stream: STREAM, start: day.toISOString() });
  const r = await pageFetch(page, '/api/recordings?' + q);
  assert(r.status === 200, `GET /api/recordings answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.recordings.filter((x) => x.closed).map((x) => ({ ...x, s: Date.parse(x.start), e: Date.parse(x.end) }));
}

// Waits until the video's currentTime has advanced by `by` seconds; returns [from, to].
async function advances(page, selector, by, ms = 20000) {
  const t = () => page.$eval(selector, (v) => v.currentTime);
  const first = await until(`${selector} to start playing`, async () => ((await t()) > 0 ? t() : 0), ms);
  const last = await until(`${selector} to advance by ${by} s from ${first.toFixed(2)} s`, async () => {
    const now = await t();
    return now >= first + by ? now : 0;
  }, ms);
  return [first, last];
}

// GET with a raw (un-normalised) path: status and body.
function rawGet(path) {
  return new Promise((resolve, reject) => {
    const u = new URL(BASE);
    const req = http.get({ host: u.hostname, port: u.port, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

// ---- tests ----

async function testAssets() {
  const page = await fetch(`${BASE}/`, { headers: { 'Accept-Encoding': 'gzip' } });
  const html = await page.text();
  const h = (n) => page.headers.get(n) || '';
  assert(page.status === 200 && html.startsWith('<!DOCTYPE html>'), `GET / answered ${page.status}`);
  assert(h('content-encoding') === 'gzip', `GET / with Accept-Encoding: gzip came back as "${h('content-encoding')}"`);
  assert(h('content-security-policy').includes("script-src 'self'"), `CSP of / is "${h('content-security-policy')}"`);
  assert(h('x-content-type-options') === 'nosniff' && h('referrer-policy') === 'same-origin', 'security headers missing');
  const again = await fetch(`${BASE}/`, { headers: { 'If-None-Match': h('etag') } });
  assert(again.status === 304, `a matching If-None-Match got ${again.status}, not 304`);
  const files = [...html.matchAll(/(?:src|href)="([^"#:]+)"/g)].map((m) => m[1]);
  let total = Number(h('content-length'));
  const sizes = [`index.html ${total}`];
  for (const f of files) {
    const r = await rawGet(`/${f}`);
    assert(r.status === 200 && r.headers['content-encoding'] !== 'gzip', `/${f}: ${r.status}`);
    const z = await fetch(`${BASE}/${f}`, { headers: { 'Accept-Encoding': 'gzip' } });
    const n = Number(z.headers.get('content-length'));
    assert(z.headers.get('content-encoding') === 'gzip' && n > 0, `/${f} is not sent gzipped`);
    total += n;
    sizes.push(`${f} ${n}`);
  }
  console.log(`    first load, gzipped: ${total} bytes (${(total / 1024).toFixed(1)} KiB) in ${files.length + 1} requests: ${sizes.join(', ')}`);
  assert(total <= 150 * 1024, `the first load is ${total} bytes gzipped, over the 150 KB budget`);
  for (const p of ['/../Cargo.toml', '/%2e%2e/%2e%2e/etc/passwd', '/..%2fCargo.toml', '/nope.js']) {
    const r = await rawGet(p);
    assert(r.status === 404 && JSON.parse(r.body).error, `GET ${p} answered ${r.status}: ${r.body.slice(0, 80)}`);
  }
}

async function testSetup() {
  S.browser = await launch();
  const { page } = await newPage(S.browser);
  S.admin = page;
  await page.goto(`${BASE}/`);
  await page.waitForSelector('#setup-form');
  await shot(page, 'setup');
  await page.fill('#setup-form input[name=username]', ADMIN.name);
  await page.fill('#setup-form input[name=password]', ADMIN.pass);
  await page.fill('#setup-form input[name=confirm]', ADMIN.pass);
  await page.click('#setup-form button[type=submit]');
  await ready(page, '#/live');
  await page.waitForSelector(`.tile[data-stream="${STREAM}"]`);
  const st = await pageFetch(page, '/api/auth/status');
  assert(st.body.user && st.body.user.name === ADMIN.name && st.body.user.role === 'admin', `status after setup: ${JSON.stringify(st.body)}`);
  assert(!st.body.setup_required, 'setup is still required after setup');
  const second = await pageFetch(page, '/api/auth/setup', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'x', password: 'Whatever-123456' }) });
  assert(second.status === 409, `a second setup answered ${second.status}, not 409`);
}

async function testLogin() {
  const page = S.admin;
  await page.click('#who button');
  await page.waitForSelector('#login-form');
  const st = await pageFetch(page, '/api/auth/status');
  assert(!st.body.user, `still logged in after logging out: ${JSON.stringify(st.body)}`);
  const denied = await pageFetch(page, '/api/streams');
  assert(denied.status === 401, `GET /api/streams without a session answered ${denied.status}, not 401`);
  await shot(page, 'login');
  await fillLogin(page, ADMIN.name, 'wrong-password');
  const err = await until('the login error message', () => errorText(page));
  assert(err, 'no error message is shown');
  assert(page.url().endsWith('#/login'), `a wrong password left the login page: ${page.url()}`);
  console.log(`    wrong password shows: "${err}"`);
  await shot(page, 'login-error');
  await fillLogin(page, ADMIN.name, ADMIN.pass);
  await ready(page, '#/live');
}

async function testLive() {
  const page = S.admin;
  await open(page, '#/live');
  const video = `.tile[data-stream="${STREAM}"] video`;
  const [a, b] = await advances(page, video, 1.5, 25000);
  const w = await page.$eval(video, (v) => v.videoWidth);
  assert(w > 0, 'the live video has no decoded picture (videoWidth 0)');
  console.log(`    live currentTime ${a.toFixed(2)} -> ${b.toFixed(2)} s, ${w} px wide`);
  if (H265) {
    // Chromium has no H.265 in MSE: that tile must say so instead of staying black.
    const tile = `.tile[data-stream="${H265}"]`;
    await page.waitForSelector(`${tile}[data-state=error]`, { timeout: 25000 });
    const msg = await page.textContent(`${tile} .state`);
    assert(/cannot play/.test(msg) && /hvc1|hev1|H\.?265/i.test(msg), `the H.265 tile says "${msg}"`);
    console.log(`    ${H265}: "${msg}"`);
  }
  await shot(page, 'live');
  await page.click(`.tile[data-stream="${STREAM}"]`);
  await ready(page, `#/live?stream=${STREAM}`);
  await advances(page, `.grid.single video`, 1, 25000);
  await shot(page, 'live-single');
}

// The live grid fills the screen: one camera gets (nearly) all of it; a chosen
// layout is remembered across a reload.
async function testLiveGrid() {
  const page = S.admin;
  const all = (await pageFetch(page, '/api/streams')).body.streams;
  const others = all.filter((s) => s.enabled && s.name !== STREAM).map((s) => s.name);
  await page.evaluate(() => localStorage.removeItem('oxinvr.live.layout'));
  try {
    for (const n of others) await pageApi(page, 'PUT', `/api/streams/${n}`, { enabled: false });
    await reload(page, '#/live');
    await advances(page, `.tile[data-stream="${STREAM}"] video`, 1, 25000);
    const m = await gridMeasure(page);
    assert(m.tiles.length === 1, `${m.tiles.length} tiles with one camera enabled`);
    const [t] = m.tiles;
    const share = (t.w * t.h) / (m.grid.w * m.grid.h);
    assert(share >= 0.9, `the only camera's tile covers ${(share * 100).toFixed(0)} % of the grid`);
    assert(m.grid.w >= m.view.w - 60 && m.grid.bottom >= m.ih - 40 && t.h >= 0.6 * m.ih,
      `the grid (${m.grid.w}x${m.grid.h}, bottom ${m.grid.bottom}) leaves the window (${m.view.w} wide, ${m.ih} tall) empty`);
    console.log(`    one camera: tile ${t.w}x${t.h} px in a ${m.view.w}x${m.ih} px view (${(share * 100).toFixed(0)} % of the grid)`);
    await shot(page, 'live-one-camera');
  } finally {
    for (const n of others) await pageApi(page, 'PUT', `/api/streams/${n}`, { enabled: true });
  }
  await reload(page, '#/live');
  const auto = await gridMeasure(page);
  assert(auto.cells === '2' && auto.tiles.length === others.length + 1, `${auto.tiles.length} cameras on auto: ${auto.cells}x${auto.cells}`);
  await page.selectOption('#live-layout', '3');
  await reload(page, '#/live');
  const kept = await gridMeasure(page);
  assert(kept.layout === '3' && kept.cells === '3', `after choosing 3x3 and a reload the layout is ${kept.layout}, ${kept.cells} cells a side`);
  const w = kept.tiles[0].w;
  assert(Math.abs(w * 3 - kept.grid.w) < 30, `a 3x3 tile is ${w} px wide in a ${kept.grid.w} px grid`);
  await shot(page, 'live-3x3');
  await page.selectOption('#live-layout', 'auto');
}

function gridMeasure(page) {
  return page.evaluate(() => {
    const box = (e) => {
      const r = e.getBoundingClientRect();
      return { w: Math.round(r.width), h: Math.round(r.height), bottom: Math.round(r.bottom) };
    };
    const grid = document.querySelector('#live-grid');
    return {
      grid: box(grid), view: box(document.querySelector('#view')), ih: innerHeight, cells: grid.dataset.cells,
      layout: document.querySelector('#live-layout').value, tiles: [...grid.querySelectorAll('.tile')].map(box),
    };
  });
}

async function testTimeline() {
  const page = S.admin;
  const recs = await closedRecordings(page);
  assert(recs.length >= 2, `only ${recs.length} closed recording(s) of ${STREAM} today`);
  await open(page, `#/timeline?stream=${STREAM}`);
  await page.waitForFunction(() => document.querySelector('#timeline').timeline.spans.length > 0);
  // Start 3 s into the first closed recording.
  const target = recs[0].s + 3000;
  await clickTimeline(page, target);
  const [a, b] = await advances(page, '#tl-video', 1.5);
  let wall = await clockMs(page);
  assert(wall >= target - 5000 && wall <= target + 20000, `the clock shows ${new Date(wall).toISOString()} after a click at ${new Date(target).toISOString()}`);
  console.log(`    timeline: currentTime ${a.toFixed(2)} -> ${b.toFixed(2)} s at ${new Date(wall).toISOString()}`);
  const events = await page.textContent('#tl-legend');
  assert(/events: (none|\d+) on this day/.test(events), `the timeline's legend says "${events}"`);
  await shot(page, 'timeline');
  // Across a file boundary: from 1.5 s before a recording's end to 1.5 s into the next
  // one, where both last at least 3 s and meet (the first files can be short runs).
  const i = recs.findIndex((r, k) => recs[k + 1] && r.e - r.s >= 3000 && recs[k + 1].e - recs[k + 1].s >= 3000 &&
    Math.abs(recs[k + 1].s - r.e) < 1000);
  assert(i >= 0, `no two closed recordings of 3 s or more that meet: ${recs.map((r) => `${r.start}..${r.end}`).join(', ')}`);
  const boundary = recs[i].e;
  await clickTimeline(page, boundary - 1500);
  let seen = 0;
  try {
    wall = await until('playback across the first file boundary', async () => {
      seen = await clockMs(page);
      return seen > boundary + 1500 ? seen : 0;
    }, 20000);
  } catch (e) {
    // Say where it stuck: the clock, the player and the recordings around the boundary.
    const player = await page.$eval('#tl-video', (v) => ({
      src: v.currentSrc, t: v.currentTime, paused: v.paused, ready: v.readyState, error: v.error && v.error.message,
    }));
    const near = (await closedRecordings(page)).slice(i, i + 2).map((r) => `${new Date(r.s).toISOString()}..${new Date(r.e).toISOString()}`);
    e.message += `; the clock stuck at ${seen ? new Date(seen).toISOString() : '?'}, player ${JSON.stringify(player)}, recordings ${near.join(', ')}`;
    throw e;
  }
  console.log(`    played across the boundary at ${new Date(boundary).toISOString()} to ${new Date(wall).toISOString()}`);
}

async function clickTimeline(page, ms) {
  const box = await page.$eval('#timeline', (c) => {
    const r = c.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, view: c.timeline.view };
  });
  const [a, b] = box.view;
  assert(ms > a && ms < b, `${new Date(ms).toISOString()} is outside the timeline's view`);
  await page.mouse.click(box.x + ((ms - a) / (b - a)) * box.w, box.y + 35);
}

async function clockMs(page) {
  const text = await page.$eval('#tl-clock', (e) => e.textContent);
  const m = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)$/.exec(text);
  assert(m, `the timeline clock shows "${text}"`);
  return new Date(+m[1], m[2] - 1, +m[3], +m[4], +m[5], +m[6]).getTime();
}

async function testExport() {
  const page = S.admin;
  const recs = await closedRecordings(page);
  const start = recs[0].s + 2000;
  const end = Math.min(start + 15000, recs[recs.length - 1].e);
  const span = (end - start) / 1000;
  assert(span >= 8, `only ${span} s of closed recordings to export`);
  await open(page, `#/export?stream=${STREAM}&start=${start}&end=${end}`);
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 30000 }), page.click('#export-go')]);
  const file = join(WORK, download.suggestedFilename() || 'export.mp4');
  await download.saveAs(file);
  await page.waitForFunction(() => /Saved/.test(document.querySelector('#export-status').textContent));
  const progress = await page.$eval('#export-progress', (p) => p.value);
  assert(progress === 1, `the progress bar ended at ${progress}`);
  await shot(page, 'export');
  const probe = ffprobe(file);
  const v = probe.streams.find((s) => s.codec_type === 'video');
  assert(v && v.codec_name === 'h264', `no H.264 video stream in the export: ${JSON.stringify(probe.streams.map((s) => s.codec_name))}`);
  // From the keyframe at or before start (GOP 1 s) to the end of the fragment holding end.
  const d = Number(v.duration || probe.format.duration);
  assert(d >= span - 0.5 && d <= span + 2.5, `the export's video lasts ${d} s; the span was ${span} s`);
  const bad = decodesCleanly(file);
  assert(!bad, `ffmpeg could not decode the export: ${bad}`);
  console.log(`    ${download.suggestedFilename()}: ${v.codec_name} ${v.width}x${v.height}, ${d} s for a ${span} s span`);
}

// Events: one made through the API appears in the open list without a reload
// (the server's push), and a click on it plays its clip.
async function testEvents() {
  const page = S.admin;
  const recs = await closedRecordings(page);
  const start = recs[recs.length - 1].e - 6000;
  await open(page, `#/events?stream=${STREAM}`);
  const made = await pageApi(page, 'POST', '/api/events', { stream: STREAM, label: 'browser', start_ms: start, duration_s: 2 });
  const card = `#events-grid .event-card[data-id="${made.id}"]`;
  await page.waitForSelector(card, { timeout: 10000 });
  await page.click(card);
  await advances(page, '#events-player', 1);
  await shot(page, 'events');
}

// Detection in the page, on DETECT (the test camera's moving ball, detect = ["motion"]):
// the live tile's motion badge, the Events grid's thumbnails (loaded) and a clip that plays,
// paging and the label filter, the timeline's events lane (a click seeks to the event), and
// the operator's switch that turns detection off (the API says so) and on again.
async function testDetection() {
  assert(DETECT, 'OXINVR_DETECT_STREAM is not set (scripts/test-browser gives cam2 detect = ["motion"])');
  const page = S.admin;
  const q = `/api/events?stream=${DETECT}&kind=motion`;
  const first = await until(`a motion event of ${DETECT} with a thumbnail`, async () => {
    const r = await pageFetch(page, q);
    return (r.body.events || []).find((e) => e.thumbnail_url);
  }, 60000, 500);
  console.log(`    motion event ${first.id} began ${new Date(first.start_ms).toISOString()}${first.end_ms ? '' : ', ongoing'}`);

  await open(page, '#/live');
  const tile = `.tile[data-stream="${DETECT}"]`;
  await page.waitForSelector(`${tile} .detections .badge.motion`, { timeout: 15000 });
  assert(!(await page.$(`.tile[data-stream="${STREAM}"] .detections`)), `${STREAM} detects nothing, yet its tile has a detections badge`);
  await shot(page, 'live-detections');

  await open(page, `#/events?stream=${DETECT}&kind=motion`);
  const card = `#events-grid .event-card[data-id="${first.id}"]`;
  await page.waitForSelector(`${card} img`);
  const pics = await until('the thumbnails to load', () => page.$$eval('#events-grid .event-card img', (l) => {
    const done = l.filter((i) => i.complete);
    return done.length === l.length ? l.map((i) => [i.naturalWidth, i.naturalHeight]) : null;
  }));
  assert(pics.length > 0 && pics.every(([w, hh]) => w > 0 && hh > 0), `thumbnails (naturalWidth x naturalHeight): ${JSON.stringify(pics)}`);
  console.log(`    ${pics.length} thumbnail(s) loaded, the first ${pics[0][0]}x${pics[0][1]}`);
  await shot(page, 'events-grid');
  await page.click(card);
  const [a, b] = await advances(page, '#events-player', 1.5, 30000);
  const err = await page.$eval('#events-player', (v) => (v.error ? `${v.error.code} ${v.error.message}` : ''));
  assert(!err, `the clip's video reports an error: ${err}`);
  console.log(`    clip of event ${first.id}: currentTime ${a.toFixed(2)} -> ${b.toFixed(2)} s`);
  await shot(page, 'events-clip');

  // Paging and the label filter: 3 events labelled "pagetest", 2 a page.
  const now = Date.now();
  for (let i = 0; i < 3; i++) {
    await pageApi(page, 'POST', '/api/events', { stream: DETECT, label: 'pagetest', start_ms: now - 30000 + i * 1000, duration_s: 1 });
  }
  await open(page, '#/events?label=pagetest&limit=2');
  const cards = () => page.$$eval('#events-grid .event-card', (l) => l.length);
  await until('2 cards on the first page', async () => (await cards()) === 2);
  await page.click('#events-more');
  await until('3 cards after "Older events"', async () => (await cards()) === 3);
  assert(await page.$eval('#events-more', (e) => e.hidden), '"Older events" is still offered after the last page');

  // The timeline's events lane: a click on the event's bar seeks playback to its start.
  await open(page, `#/timeline?stream=${DETECT}`);
  const lane = await until('the events lane to hold the motion event', () => page.$eval('#timeline', (c, id) => {
    const t = c.timeline;
    const ev = t.events.find((e) => e.id === id);
    if (!ev) return null;
    const r = c.getBoundingClientRect();
    return { x: r.x + t.xOf(ev.start_ms) + 1, y: r.y + 61, start: ev.start_ms, n: t.events.length, spans: t.spans };
  }, first.id));
  const legend = await page.textContent('#tl-legend');
  assert(new RegExp(`events: ${lane.n} on this day`).test(legend), `the legend says "${legend}" with ${lane.n} events drawn`);
  await page.mouse.click(lane.x, lane.y);
  await advances(page, '#tl-video', 1, 30000);
  const wall = await clockMs(page);
  assert(wall >= lane.start - 5000 && wall <= lane.start + 20000,
    `after a click on the event at ${new Date(lane.start).toISOString()} the clock shows ${new Date(wall).toISOString()}`);
  console.log(`    timeline: ${lane.n} event(s) in the lane; a click on event ${first.id} plays from ${new Date(wall).toISOString()}`);
  await shot(page, 'timeline-events');

  // The switch: off, the API says enabled=false; on again.
  await open(page, '#/events');
  const box = `#detect-switches input[data-stream="${DETECT}"]`;
  assert(await page.$eval(box, (e) => e.checked), 'the detection switch is not on at first');
  const enabled = async () => (await pageFetch(page, `/api/streams/${DETECT}`)).body.detection.enabled;
  await page.click(box);
  await until('the API to say detection is off', async () => (await enabled()) === false);
  assert(!(await page.$eval(box, (e) => e.checked)), 'the switch shows on after turning detection off');
  await shot(page, 'events-detection-off');
  await open(page, '#/live');
  await page.waitForSelector(`${tile} .detections .badge.det-off`);
  await open(page, '#/events');
  await page.click(box);
  await until('the API to say detection is on again', async () => (await enabled()) === true);
}


// A webhook receiver as a user would write one: checks the signature and the time, answers 200.
function startReceiver() {
  const got = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const sig = Object.fromEntries(String(req.headers['x-oxinvr-signature'] || '').split(',').map((p) => p.split('=')));
      const mac = createHmac('sha256', HOOK_SECRET).update(`${sig.t}.`).update(body).digest();
      const theirs = Buffer.from(sig.v1 || '', 'hex');
      const signed = theirs.length === mac.length && timingSafeEqual(mac, theirs);
      const fresh = Math.abs(Date.now() / 1000 - Number(sig.t)) <= 300;
      got.push({ signed, fresh, body: JSON.parse(body.toString() || 'null') });
      res.writeHead(signed && fresh ? 200 : 401).end();
    });
  });
  server.listen(HOOK_PORT, '127.0.0.1');
  return { got, close: () => server.close() };
}

async function testIntegrations() {
  assert(S.receiver, 'OXINVR_HOOK_PORT is not set (scripts/test-browser starts the recorder with a webhook to it)');
  const receiver = S.receiver;
  {
    const page = S.admin;
    const browserEvent = receiver.got.find((g) => g.body && g.body.type === 'event.began' && g.body.event.label === 'browser');
    assert(browserEvent && browserEvent.signed, `the events test's event did not reach the receiver signed: ${JSON.stringify(receiver.got.slice(0, 3))}`);
    await open(page, '#/integrations');
    const row = (name) => `#webhook-list tr[data-hook="${name}"]`;
    await page.waitForSelector(row('receiver'));
    await page.click(`${row('receiver')} button:has-text("Send test event")`);
    await page.waitForSelector('#view .msg.ok:not([hidden])');
    const queued = await page.textContent('#view .msg.ok');
    assert(/Test event test-\d+ queued for receiver/.test(queued), `the test button says "${queued}"`);
    const test = await until('the test event at the receiver', async () => receiver.got.find((g) => g.body && g.body.type === 'event.test'));
    assert(test.signed && test.fresh, `the receiver could not verify the test event: ${JSON.stringify(test)}`);
    assert(test.body.event.stream === STREAM && test.body.hook === 'receiver', `the test event: ${JSON.stringify(test.body)}`);
    const recent = await until('the page to show the accepted test', async () => {
      const t = await page.textContent(`${row('receiver')} td.recent`);
      return /test: accepted \(HTTP 200\), 1 attempt/.test(t) && t;
    });
    console.log(`    receiver's recent deliveries: "${recent.trim()}"`);
    await page.click(`${row('nobody')} button:has-text("Send test event")`);
    const refused = await until('the refused hook\'s error', async () => {
      const t = await page.textContent(row('nobody'));
      return /refused/.test(t) && t;
    }, 20000);
    assert(/retrying|delivering|idle/.test(refused), `the hook nobody listens to shows: ${refused}`);
    const mqtt = await until('the MQTT error', async () => {
      const t = await page.textContent('#mqtt-status');
      return /disconnected/.test(t) && /127\.0\.0\.1/.test(t) && t;
    }, 20000);
    console.log(`    MQTT: "${mqtt.replace(/\s+/g, ' ').slice(0, 160)}"`);
    const url = await page.textContent('#metrics-url code');
    assert(url === `${BASE}/api/metrics`, `the metrics URL shown is "${url}"`);
    const m = await pageFetch(page, '/api/metrics');
    assert(m.status === 200, `GET /api/metrics with the page's session answered ${m.status}`);
    await shot(page, 'integrations');
    const text = await page.textContent('#view');
    assert(!text.includes(HOOK_SECRET), 'the page shows a webhook secret');
  }
}

async function testPages() {
  const page = S.admin;
  await open(page, `#/recordings?stream=${STREAM}`);
  const rows = await page.$$eval('#recordings tbody tr', (r) => r.length);
  assert(rows >= 2, `the recordings page lists ${rows} row(s)`);
  await inProgressRecording(page);
  await page.click('#recordings tbody tr:nth-child(2) button');
  await advances(page, '.player video', 1);
  await shot(page, 'recordings');
  await open(page, '#/streams');
  await page.waitForSelector(`#streams tr[data-stream="${STREAM}"] .pill.streaming`);
  await shot(page, 'streams');
  await open(page, `#/streams?edit=${STREAM}`);
  const url = await page.inputValue('#stream-form input[name=url]');
  assert(url.includes('127.0.0.1'), `the edit form shows the URL "${url}"`);
  await page.fill('#stream-form input[name=retention_days]', '7');
  await page.click('#stream-form button:has-text("Test connection")');
  await page.waitForSelector('#stream-form .msg.ok, #stream-form .msg.error:not([hidden])', { timeout: 20000 });
  const probe = await page.textContent('#stream-form .msg:not([hidden])');
  assert(/^Connected: .*\d+x\d+/.test(probe), `the connection test says "${probe}"`);
  console.log(`    connection test: "${probe}"`);
  await shot(page, 'stream-edit');
  await page.click('#stream-form button[type=submit]');
  await ready(page, '#/streams');
  const s = await pageFetch(page, `/api/streams/${STREAM}`);
  assert(s.body.retention_days === 7, `retention_days after saving the form: ${s.body.retention_days}`);
  await addAndDeleteStream(page, s.body.url);
  await open(page, '#/settings');
  await page.waitForSelector('#settings .card, #settings .msg');
  const settings = await page.textContent('#settings');
  assert(/\[storage\]/.test(settings) && /segment_seconds/.test(settings), `the settings page shows: ${settings.slice(0, 200)}`);
  await settingsInEffect(page);
  await shot(page, 'settings');
  // An upload that is not a bundle: sent with the CSRF header, refused, the reason shown.
  await page.setInputFiles('#ota input[type=file]', { name: 'bad.bin', mimeType: 'application/octet-stream', buffer: Buffer.from('not a bundle at all') });
  await page.click('#ota button[type=submit]');
  await page.waitForSelector('#ota .msg.error:not([hidden])');
  const ota = await page.textContent('#ota .msg.error');
  assert(/refused/.test(ota) && !/CSRF/i.test(ota), `a bad bundle upload says "${ota}"`);
  console.log(`    bad OTA bundle: "${ota}"`);
  await systemPage(page);
  await shot(page, 'system');
}

// The recording being written shows how long and large it is so far (its row
// moves only at each sync, every 10 s here: as long as a whole segment).
async function inProgressRecording(page) {
  const row = '#recordings tr[data-open]';
  const [d, size] = await until('the recording being written to show a length', async () => {
    await page.click('.page-head button:has-text("Refresh")');
    await page.waitForSelector(`${row} td.duration`);
    const got = [await page.textContent(`${row} td.duration`), await page.textContent(`${row} td.size`)];
    return seconds(got[0]) > 0 ? got : 0;
  }, 20000, 1000);
  assert(seconds(d) <= 15, `the recording being written (10 s segments) shows ${d}`);
  assert(/(KiB|MiB)$/.test(size) && parseFloat(size) > (/MiB/.test(size) ? 0 : 2), `the recording being written shows ${size}`);
  console.log(`    recording being written: ${d}, ${size}`);
}

// Settings show each stream's settings in effect, where they came from, and
// which values the configuration file puts back at the next start.
async function settingsInEffect(page) {
  const row = `#stream-settings tr[data-stream="${STREAM}"]`;
  const cell = await page.textContent(`${row} td[data-key=retention_days]`);
  assert(/^7\b/.test(cell.trim()), `after retention_days 7 was saved through the API, settings show "${cell}"`);
  assert(/until restart/.test(cell), `settings do not say that the file resets retention_days at restart: "${cell}"`);
  const source = await page.textContent(`${row} .badge`);
  assert(source === 'config file', `${STREAM} (from the configuration file) shows the source "${source}"`);
  const api = (await pageFetch(page, '/api/settings')).body.streams.find((x) => x.name === STREAM);
  assert(api && api.in_effect.retention_days === 7 && api.restart_resets.includes('retention_days'), `GET /api/settings: ${JSON.stringify(api)}`);
  console.log(`    settings: retention_days "${cell.trim()}", source "${source}"`);
}

// The system page: every figure labelled and non-negative, bars that say
// what they fill with, bitrate charts drawn from the server's recent history.
async function systemPage(page) {
  await open(page, '#/system');
  const opened = Date.now();
  const samples = await until('the bitrate chart to have points', () =>
    page.$eval(`#bitrate-charts canvas[data-stream="${STREAM}"]`, (c) => c.samples && c.samples.length >= 10 && c.samples), 4000, 200);
  const span = (samples[samples.length - 1][0] - samples[0][0]) / 1000;
  const drawn = await page.$eval(`#bitrate-charts canvas[data-stream="${STREAM}"]`, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 120) n++;
    return n;
  });
  assert(span >= 18 && drawn > 100, `the chart of ${STREAM} has ${samples.length} samples over ${span} s, ${drawn} line pixels`);
  console.log(`    bitrate chart: ${samples.length} samples over ${span} s, ${Date.now() - opened} ms after opening`);
  await sleep(2500);
  const figures = await page.$$eval('#system-info dt', (dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent]));
  assert(figures.length >= 15, `the system page shows ${figures.length} figures`);
  for (const [k, v] of figures) {
    assert(k.trim(), `a figure without a label: "${v}"`);
    assert(!/(^|[^\w.-])-\s*\d/.test(v), `"${k}" shows a negative figure: "${v}"`);
  }
  assert(figures.filter(([k]) => /^Heap, /.test(k)).length >= 4, 'the heap by subsystem is missing');
  const bars = await page.$$eval('#system-info meter', (ms) => ms.map((m) => ({
    fill: (m.value / m.max) * 100, text: m.parentElement.textContent, label: m.closest('dd').previousElementSibling.textContent })));
  assert(bars.length >= 5, `${bars.length} bars on the system page`);
  for (const b of bars) {
    const m = /([\d.]+) % used/.exec(b.text);
    assert(m && !/free/i.test(b.label), `the bar "${b.label}" does not say that it fills with the used share: "${b.text}"`);
    assert(Math.abs(Number(m[1]) - b.fill) < 0.2, `the bar "${b.label}" says ${m[1]} % used but is filled to ${b.fill.toFixed(1)} %`);
  }
  const sys = (await pageFetch(page, '/api/system')).body;
  const negative = Object.entries(sys.memory.heap_by_subsystem).filter(([, v]) => v < 0);
  assert(!negative.length, `GET /api/system has negative heap figures: ${JSON.stringify(negative)}`);
  const logs = await page.textContent('#logs');
  assert(!/Loading|unavailable/.test(logs) && logs.split('\n').length > 3, `the log shows: ${logs.slice(0, 200)}`);
  console.log(`    system page: ${figures.length} figures, none negative; ${bars.length} bars labelled "used"`);
}

// Adds a stream through the form (same camera, not recording), waits until it
// streams, then deletes it with the inline confirmation.
async function addAndDeleteStream(page, url) {
  await page.click('#add-stream');
  await ready(page, '#/streams?new=1');
  await page.fill('#stream-form input[name=name]', 'extra');
  await page.fill('#stream-form input[name=url]', url);
  await page.selectOption('#stream-form select[name=record]', 'off');
  await page.click('#stream-form button[type=submit]');
  await ready(page, '#/streams');
  await page.waitForSelector('#streams tr[data-stream="extra"] .pill.streaming', { timeout: 20000 });
  await page.click('#streams tr[data-stream="extra"] .confirm-wrap > button.danger');
  await page.click('#streams tr[data-stream="extra"] .confirm button.danger');
  await until('the deleted stream to leave the list', async () => !(await page.$('#streams tr[data-stream="extra"]')));
  const gone = await pageFetch(page, '/api/streams/extra');
  assert(gone.status === 404, `GET /api/streams/extra after deleting it answered ${gone.status}`);
}

// ONVIF: "Discover cameras" finds the simulated camera, a wrong password is named, the
// right one lists its profiles, "Add stream" records it; the live view's PTZ arrow sends
// ContinuousMove then Stop to the camera (read back from the simulator).
async function testOnvif() {
  assert(ONVIF_SIM, 'OXINVR_ONVIF_SIM is not set (scripts/test-browser starts the simulator)');
  const page = S.admin;
  await open(page, '#/streams');
  await page.click('#discover');
  await ready(page, '#/streams?discover=1');
  await page.click('#discover-form button:has-text("Search the network")');
  await page.waitForSelector('#onvif-devices tbody tr', { timeout: 10000 });
  const row = await page.textContent('#onvif-devices tbody tr');
  assert(/Front Gate/.test(row) && /SC-PTZ-2/.test(row), `the discovered camera reads "${row}"`);
  await page.click('#onvif-devices tbody tr button');
  await page.fill('#discover-form input[name=username]', 'admin');
  await page.fill('#discover-form input[name=password]', 'wrong');
  await page.click('#discover-form button[type=submit]');
  await page.waitForSelector('#discover-form .msg.error:not([hidden])');
  const wrong = await page.textContent('#discover-form .msg.error');
  assert(/refused the user name or password/.test(wrong), `a wrong camera password says "${wrong}"`);
  await page.fill('#discover-form input[name=password]', 'Sim-pass-42');
  await page.click('#discover-form button[type=submit]');
  await page.waitForSelector('#onvif-profiles tbody tr');
  await page.fill('#onvif-profiles input[name=stream-name]', 'onvifcam');
  await page.check('#onvif-events input');
  await shot(page, 'onvif-discover');
  await page.click('#onvif-add');
  await ready(page, '#/streams');
  await page.waitForSelector('#streams tr[data-stream="onvifcam"] .pill.streaming', { timeout: 20000 });
  // The ticked box: the camera's own motion events are watched (a PullPoint subscription).
  const settings = await pageApi(page, 'GET', '/api/streams/onvifcam/onvif');
  assert(settings.events === true, `the ONVIF settings say ${JSON.stringify(settings)}`);
  await until('a PullPoint subscription at the camera', async () =>
    (await (await fetch(`${ONVIF_SIM}/sim/requests`)).json()).some((r) => r.op === 'CreatePullPointSubscription'));
  await open(page, '#/live?stream=onvifcam');
  await page.waitForSelector('#ptz button.ptz');
  const right = page.locator('#ptz button.ptz', { hasText: '▶' });
  await right.dispatchEvent('pointerdown');
  await right.dispatchEvent('pointerup');
  const sent = async () => (await (await fetch(`${ONVIF_SIM}/sim/requests`)).json()).map((r) => r.op);
  await until('ContinuousMove then Stop at the camera', async () => {
    const ops = await sent();
    return ops.includes('ContinuousMove') && ops.lastIndexOf('Stop') > ops.indexOf('ContinuousMove');
  });
  const move = (await (await fetch(`${ONVIF_SIM}/sim/requests`)).json()).find((r) => r.op === 'ContinuousMove');
  assert(/PanTilt[^>]*x="0.5"/.test(move.body) && move.auth === 'ok', `the camera got ${move.body} (${move.auth})`);
  await shot(page, 'onvif-ptz');
  const del = await pageApi(page, 'DELETE', '/api/streams/onvifcam?purge=true');
  assert(del.deleted === 'onvifcam', `deleting the ONVIF stream answered ${JSON.stringify(del)}`);
}

async function testAccount() {
  const page = S.admin;
  await open(page, '#/account');
  const next = ADMIN.pass + '-new';
  await page.fill('#password-form input[name=current_password]', ADMIN.pass);
  await page.fill('#password-form input[name=password]', next);
  await page.fill('#password-form input[name=confirm]', next);
  await page.click('#password-form button[type=submit]');
  await page.waitForSelector('#password-form .msg.ok');
  ADMIN.pass = next;
  const check = await fetch(`${BASE}/api/auth/login`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'User-Agent': 'other-device' },
    body: JSON.stringify({ username: ADMIN.name, password: next }) });
  assert(check.status === 200, `logging in with the new password answered ${check.status}`);
  await revokeOther(page, check.headers.get('set-cookie').split(';')[0]);
  await page.fill('#keys input[name=key-name]', 'browser-test');
  await page.click('#keys button[type=submit]');
  await page.waitForSelector('#keys .new-key code');
  const key = await page.textContent('#keys .new-key code');
  assert(/^oxk_/.test(key), `the new key shown is "${key}"`);
  const withKey = () => fetch(`${BASE}/api/streams`, { headers: { Authorization: `Bearer ${key}` } });
  const ok = await withKey();
  assert(ok.status === 200, `GET /api/streams with the new key answered ${ok.status}`);
  await shot(page, 'account-key');
  await page.click('#key-list tr:has-text("browser-test") .confirm-wrap > button.danger');
  await page.click('#key-list tr:has-text("browser-test") .confirm button.danger');
  await until('the key to leave the list', async () => !(await page.$('#key-list tr:has-text("browser-test")')));
  const after = await withKey();
  assert(after.status === 401, `GET /api/streams with a deleted key answered ${after.status}`);
}

// Revokes the session of `cookie` (another device) on the account page; it stops working.
async function revokeOther(page, cookie) {
  const status = async () => (await (await fetch(`${BASE}/api/auth/status`, { headers: { Cookie: cookie } })).json()).user;
  assert(await status(), 'the other session does not work before it is revoked');
  await page.reload();
  await ready(page, '#/account');
  const row = '#session-list tr:has-text("other-device")';
  await page.click(`${row} button`);
  await until('the revoked session to leave the list', async () => !(await page.$(row)));
  assert(!(await status()), 'the revoked session still works');
}

async function testViewer() {
  const page = S.admin;
  await open(page, '#/users');
  await page.fill('#new-user input[name=username]', VIEWER.name);
  await page.fill('#new-user input[name=password]', VIEWER.pass);
  await page.selectOption('#new-user select[name=role]', 'viewer');
  await page.click('#new-user button[type=submit]');
  await page.waitForSelector(`#users tr[data-user="${VIEWER.name}"]`);
  const role = await page.$eval(`#users tr[data-user="${VIEWER.name}"] select`, (s) => s.value);
  assert(role === 'viewer', `the new user's role is ${role}`);
  await shot(page, 'users');
  const { page: vp } = await newPage(S.browser);
  S.viewer = vp;
  await loginAs(vp, VIEWER);
  const nav = await vp.$$eval('#nav a', (a) => a.map((x) => x.dataset.page));
  for (const p of ['live', 'recordings', 'timeline', 'export', 'account']) assert(nav.includes(p), `the viewer's menu lacks ${p}: ${nav}`);
  for (const p of ['settings', 'integrations', 'users', 'streams', 'system']) assert(!nav.includes(p), `the viewer's menu has ${p}: ${nav}`);
  await open(vp, '#/settings');
  const text = await vp.textContent('.denied');
  assert(/Access denied/.test(text), `#/settings as a viewer shows: ${text}`);
  await shot(vp, 'denied');
  for (const p of ['/api/settings', '/api/users']) {
    const r = await pageFetch(vp, p);
    assert(r.status === 403, `GET ${p} as a viewer answered ${r.status}, not 403`);
  }
}

async function testTotp() {
  const page = S.viewer;
  await open(page, '#/account');
  await page.click('#totp-start');
  await page.waitForSelector('#totp-qr');
  const qr = await until('the QR image to load', () => page.$eval('#totp-qr', (i) => i.complete && i.naturalWidth));
  const secret = await page.textContent('#totp-secret');
  assert(/^[A-Z2-7]{16,}=*$/.test(secret), `the secret shown is "${secret}"`);
  console.log(`    QR image ${qr} px wide, secret of ${secret.length} characters`);
  await shot(page, 'account');
  const step = Math.floor(Date.now() / 30000);
  await page.fill('#totp input[name=code]', totp(secret));
  await page.click('#totp button[type=submit]');
  await page.waitForFunction(() => /On:/.test(document.querySelector('#totp').textContent));
  const st = await pageFetch(page, '/api/auth/status');
  assert(st.body.user.totp === true, `status after enrolment: ${JSON.stringify(st.body.user)}`);
  await page.click('#logout');
  await fillLogin(page, VIEWER.name, VIEWER.pass);
  await page.waitForSelector('#login-form input[name=totp]', { state: 'visible' });
  const wrong = String((Number(totp(secret)) + 500000) % 1000000).padStart(6, '0');
  await page.fill('#login-form input[name=totp]', wrong);
  await page.click('#login-form button[type=submit]');
  await until('the wrong-code error', async () => (await errorText(page)) && page.url().endsWith('#/login'));
  await shot(page, 'login-totp');
  // A fresh code (a server may refuse the one used for enrolment again).
  while (Math.floor(Date.now() / 30000) === step) await sleep(500);
  await page.fill('#login-form input[name=totp]', totp(secret));
  await page.click('#login-form button[type=submit]');
  await ready(page, '#/live');
}

async function testPhone() {
  const { page } = await newPage(S.browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  S.phone = page;
  await loginAs(page, ADMIN);
  const logout = await page.$eval('#header-logout', (e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.left >= 0 && r.right <= innerWidth && r.bottom <= 60 && getComputedStyle(e).visibility === 'visible';
  }).catch(() => false);
  assert(logout, 'the header has no visible Log out on a phone');
  assert(!(await page.isVisible('#nav')), 'the menu is open on a phone before it was asked for');
  await advances(page, `.tile[data-stream="${STREAM}"] video`, 1, 25000);
  await shot(page, 'phone-live');
  await page.tap('#nav-toggle');
  await page.waitForSelector('#nav', { state: 'visible' });
  await shot(page, 'phone-menu');
  await page.tap('#nav a[data-page=timeline]');
  await ready(page, `#/timeline`);
  assert(!(await page.isVisible('#nav')), 'the menu stayed open after choosing a page');
  await page.waitForFunction(() => document.querySelector('#timeline').timeline.spans.length > 0);
  await shot(page, 'phone-timeline');
}

// Every main page, as the admin sees it: no control out of reach sideways, no
// button label wrapped; a screenshot of each.
const MAIN_PAGES = ['#/live', `#/recordings?stream=${STREAM}`, `#/timeline?stream=${STREAM}`, '#/export', '#/events', '#/streams',
  `#/streams?edit=${STREAM}`, `#/zones?stream=${STREAM}`, '#/settings', '#/integrations', '#/users', '#/account', '#/system'];

async function checkLayout(page, size) {
  const found = [];
  for (const hash of MAIN_PAGES) {
    await open(page, hash);
    await sleep(700);
    for (const p of await layoutProblems(page)) found.push(`${hash}: ${p}`);
    await shot(page, `layout-${size}-${hash.slice(2).replace(/\W+/g, '-')}`);
  }
  assert(!found.length, `at ${size} controls are out of reach:\n      ${found.join('\n      ')}`);
}

const testLayoutWide = () => checkLayout(S.admin, '1280x800');
const testLayoutPhone = () => checkLayout(S.phone, '390x844');

// The recorder in 1970 (below the firmware's build date): every page says the clock is not set,
// and the recordings made meanwhile are marked; the recorder whose clock is set says nothing.
async function testClockUnset() {
  assert(await S.admin.isHidden('#clock-banner'), 'the banner shows on a recorder whose clock is set');
  assert(UNSET, 'OXINVR_UNSET_URL is not set (scripts/test-browser starts that recorder)');
  const { page } = await newPage(S.browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(`${UNSET}/`);
  await page.waitForSelector('#setup-form');
  const banner = await until('the clock banner', async () => (await page.isVisible('#clock-banner')) && page.textContent('#clock-banner'));
  const want = 'The clock is not set (over 30 days before the firmware build date): recordings are kept but their times are unknown until it is.';
  assert(banner.includes(want), `the banner says: ${banner}`);
  assert(banner.includes('1970-01-01'), `the banner does not show the recorder's time: ${banner}`);
  await page.fill('#setup-form input[name=username]', ADMIN.name);
  await page.fill('#setup-form input[name=password]', ADMIN.pass);
  await page.fill('#setup-form input[name=confirm]', ADMIN.pass);
  await page.click('#setup-form button[type=submit]');
  await ready(page, '#/live');
  await shot(page, 'clock-unset-live');
  await page.click('#clock-banner a');
  const hash = '#/recordings?day=1970-01-01';
  await page.waitForFunction((h) => document.querySelector('#view').dataset.ready === h, hash);
  const rows = await page.$$eval('#recordings tbody tr', (r) => r.map((tr) => !!tr.querySelector('.time-unknown')));
  assert(rows.length >= 1 && rows.every(Boolean), `recordings of 1970, marked: ${JSON.stringify(rows)}`);
  const note = await page.textContent('#view p.msg.info');
  assert(note && note.includes('time unknown'), `no note on the recordings page: ${note}`);
  const problems = await layoutProblems(page);
  assert(!problems.length, `at 390x844 with the banner:\n      ${problems.join('\n      ')}`);
  await shot(page, 'clock-unset-recordings');
  await page.close();
}

async function testNoProblems() {
  assert(!pageProblems.length, `the page reported:\n      ${pageProblems.join('\n      ')}`);
}

// The zone editor (web-static/zones.js) on the second camera: motion switched on from the
// page, the current picture shown, three taps make a zone that the API returns; on a phone.
async function testZones() {
  const stream = 'cam2';
  const { page } = await newPage(S.browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await loginAs(page, ADMIN);
  await open(page, `#/zones?stream=${stream}`);
  if (!(await page.isChecked('input[name=detect-motion]'))) await page.click('input[name=detect-motion]');
  const src = await until('the current picture', () => page.$eval('.zone-picture', (img) => img.naturalWidth > 0 && img.src.slice(0, 22)), 30000);
  assert(src.startsWith('data:image/jpeg'), `the picture is ${src}`);
  const box = await page.$eval('#zone-overlay', (el) => { const r = el.getBoundingClientRect(); return { x: r.left, y: r.top, w: r.width, h: r.height }; });
  const taps = [[0.2, 0.5], [0.8, 0.5], [0.5, 0.9]];
  for (const [x, y] of taps) await page.mouse.click(box.x + x * box.w, box.y + y * box.h);
  await page.fill('input[name=zone-name]', 'driveway');
  await page.fill('input[name=labels]', 'person, car');
  await page.click('#zone-add');
  await page.waitForSelector('#zones tr[data-zone="driveway"]');
  const s = await pageFetch(page, `/api/streams/${stream}`);
  const zone = (s.body.zones || []).find((z) => z.name === 'driveway');
  assert(zone, `the API has no zone driveway: ${JSON.stringify(s.body.zones)}`);
  assert(zone.polygon.length === 3 && zone.polygon.every(([x, y], i) => Math.abs(x - taps[i][0]) < 0.02 && Math.abs(y - taps[i][1]) < 0.02),
    `the saved polygon ${JSON.stringify(zone.polygon)} is not where the taps were ${JSON.stringify(taps)}`);
  assert(JSON.stringify(zone.labels) === '["person","car"]', `labels: ${JSON.stringify(zone.labels)}`);
  await shot(page, 'zones-phone');
  // Deleted from the list: gone from the API too; detection back off for the other tests.
  await page.click('#zones tr[data-zone="driveway"] button');
  await page.waitForSelector('#zones tr[data-zone="driveway"]', { state: 'detached' });
  await page.click('input[name=detect-motion]');
  await until('detection off again', async () => {
    const v = await pageFetch(page, `/api/streams/${stream}`);
    return v.body.detect.length === 0 && v.body.zones.length === 0;
  });
  await page.close();
}

const TESTS = [
  ['assets: embedded, gzipped, cached, within budget, no traversal', testAssets],
  ['1 first-run setup creates the admin and lands on the live grid', testSetup],
  ['2 log out; a wrong password is refused with a message; the right one logs in', testLogin],
  ['3 live view plays (currentTime advances)', testLive],
  ['live grid: one camera fills it; a chosen layout survives a reload', testLiveGrid],
  ['4 a recording plays from the timeline, across a file boundary', testTimeline],
  ['5 export downloads an MP4 that ffprobe accepts with the span\'s duration', testExport],
  ['events: a new event is pushed into the list, a click plays its clip', testEvents],
  ['detection: live motion badge, thumbnails loaded, clip plays, paging, timeline lane seeks, switch off/on', testDetection],
  ['integrations: MQTT state and error, webhooks with their last delivery, the test button reaches a receiver that checks the signature, metrics URL', testIntegrations],
  ['pages: recordings play, stream form (test, save, add, delete), settings + OTA refusal, system', testPages],
  ['zones: the editor shows the current picture, saves a tapped polygon the API returns, deletes it', testZones],
  ['ONVIF: discover, wrong password named, add a profile, PTZ reaches the camera', testOnvif],
  ['account: password change, another session revoked, API key shown once, works, deleted', testAccount],
  ['6 a viewer has no admin menu entries, sees access denied, gets 403', testViewer],
  ['layout at 1280x800: every control of every page within reach, no wrapped buttons', testLayoutWide],
  ['7 TOTP enrolment shows a QR; the code confirms it and logs in', testTotp],
  ['phone: collapsible menu, Log out in the header, live view on a small screen', testPhone],
  ['layout at 390x844: every control of every page within reach, no wrapped buttons', testLayoutPhone],
  ['clock not set (1970): a banner on every page, recordings marked "time unknown"', testClockUnset],
  ['no page errors or CSP violations', testNoProblems],
];

async function main() {
  console.log(`browser tests against ${BASE} (stream ${STREAM}), screenshots in ${SHOTS}`);
  // Listening before any event is made, so the recorder's deliveries to it never wait in a retry.
  if (HOOK_PORT) S.receiver = startReceiver();
  let failed = 0;
  for (const [name, fn] of TESTS) {
    const t0 = Date.now();
    try {
      await withTimeout(fn(), 120000, name);
      console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n    ${e.message}`);
      await failureShots(name);
    }
  }
  if (S.browser) await S.browser.close();
  if (S.receiver) S.receiver.close();
  console.log(failed ? `browser tests: ${failed} of ${TESTS.length} FAILED` : `browser tests: all ${TESTS.length} passed`);
  process.exit(failed ? 1 : 0);
}

function withTimeout(p, ms, name) {
  let t;
  const timeout = new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${name}: no result in ${ms / 1000} s`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function failureShots(name) {
  const n = name.split(' ')[0].replace(/\W/g, '');
  for (const [who, page] of [['admin', S.admin], ['viewer', S.viewer]]) {
    if (page && !page.isClosed()) await page.screenshot({ path: join(SHOTS, `FAILED-${n}-${who}.png`), fullPage: true }).catch(() => {});
  }
}

main().catch((e) => {
  console.error(`browser tests: ${e.stack || e}`);
  process.exit(1);
});
