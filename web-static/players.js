// players.js: video without libraries. LivePlayer plays a stream's live fMP4
// over a WebSocket through Media Source Extensions; VodPlayer plays recorded
// video from OxiNVR's HLS playlists (it parses only the tags hls.rs writes and
// appends byte ranges of the stored files to one SourceBuffer); Timeline draws
// a day's recordings, gaps and events on a canvas and reports clicks/drags.
'use strict';

const MSE = window.MediaSource || window.ManagedMediaSource;

// Appends buffers to a SourceBuffer one at a time; resolves when each is in.
function sbAppend(sb, data) {
  return new Promise((resolve, reject) => {
    const done = () => {
      sb.removeEventListener('updateend', done);
      sb.removeEventListener('error', fail);
      resolve();
    };
    const fail = () => {
      sb.removeEventListener('updateend', done);
      sb.removeEventListener('error', fail);
      reject(new Error('the browser refused the video data'));
    };
    sb.addEventListener('updateend', done);
    sb.addEventListener('error', fail);
    sb.appendBuffer(data);
  });
}

function sbRemove(sb, from, to) {
  return new Promise((resolve) => {
    if (to <= from) return resolve();
    sb.addEventListener('updateend', resolve, { once: true });
    sb.remove(from, to);
  });
}

// Opens a MediaSource on `video`; resolves with it once it is open.
function openMediaSource(video) {
  return new Promise((resolve) => {
    const ms = new MSE();
    ms.addEventListener('sourceopen', () => resolve(ms), { once: true });
    if (video.src && video.src.startsWith('blob:')) URL.revokeObjectURL(video.src);
    video.disableRemotePlayback = true;
    video.src = URL.createObjectURL(ms);
  });
}

function detachVideo(video) {
  video.srcObject = null;
  if (video.src && video.src.startsWith('blob:')) URL.revokeObjectURL(video.src);
  video.removeAttribute('src');
  video.load();
}

// ---------------------------------------------------------------- live ----

// Resolves when ICE gathering is complete, or after `ms` (go2rtc takes the
// candidates that are in the offer by then).
function iceGathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(t);
        resolve();
      }
    });
  });
}

// Plays `/api/streams/{name}/live` (`?sub=1` with opts.sub: the camera's sub
// stream when it has one). onState(text, kind) reports what it does.
class LivePlayer {
  constructor(video, name, onState, opts) {
    this.video = video;
    this.name = name;
    this.sub = !!(opts && opts.sub);
    this.onState = onState || (() => {});
    this.stopped = false;
    this.retry = 0;
  }

  start() {
    // With go2rtc configured, WebRTC (signalled through OxiNVR's login) first;
    // the WebSocket/MSE view from the ring whenever that fails.
    if (Ox.state.webrtc && window.RTCPeerConnection) {
      this.webrtc().catch(() => {
        this.closePeer();
        this.connect();
      });
    } else {
      this.connect();
    }
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.closePeer();
    detachVideo(this.video);
  }

  async webrtc() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (e) => {
      if (!this.video.srcObject) this.video.srcObject = e.streams[0] || new MediaStream();
      if (!e.streams[0]) this.video.srcObject.addTrack(e.track);
      this.video.play().catch(() => {});
    };
    this.onState('connecting (WebRTC)…', 'info');
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    const path = `/api/streams/${encodeURIComponent(this.name)}/webrtc`;
    const answer = await Ox.api('POST', path, { type: 'offer', sdp: pc.localDescription.sdp });
    if (this.stopped) return;
    await pc.setRemoteDescription(answer);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && this.pc === pc && !this.stopped) {
        this.closePeer();
        this.connect();
      }
    };
    this.onState('live (WebRTC)', 'info');
  }

  closePeer() {
    if (this.pc) this.pc.close();
    this.pc = null;
    this.video.srcObject = null;
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const sub = this.sub ? '?sub=1' : '';
    const ws = new WebSocket(`${scheme}://${location.host}/api/streams/${encodeURIComponent(this.name)}/live${sub}`);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.queue = [];
    this.sb = null;
    this.fatal = null;
    this.onState('connecting…', 'info');
    ws.onmessage = (m) => (typeof m.data === 'string' ? this.onText(m.data) : this.onBinary(m.data));
    ws.onclose = () => this.closed(ws);
  }

  closed(ws) {
    if (this.ws !== ws || this.stopped) return;
    if (this.fatal) return this.onState(this.fatal, 'error');
    const wait = Math.min(30, 2 ** this.retry++);
    this.onState(`disconnected; retrying in ${wait} s`, 'error');
    this.timer = setTimeout(() => this.connect(), wait * 1000);
  }

  onText(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (m.type === 'init') this.init(m);
    else if (m.type === 'jump') this.jumpPending = true;
    else if (m.type === 'error') this.onState(m.error || 'live view error', 'error');
  }

  async init(m) {
    this.queue = [];
    this.sb = null;
    if (!MSE || !MSE.isTypeSupported(m.mime)) {
      const what = /^(hvc1|hev1)/.test(m.codec || '') ? `H.265 (${m.codec})` : m.codec || m.mime;
      this.fatal = `This browser cannot play ${what} live (${m.width}x${m.height}); recordings can still be exported.`;
      this.onState(this.fatal, 'error');
      this.ws.close();
      return;
    }
    this.retry = 0;
    const gen = (this.gen = (this.gen || 0) + 1);
    const ms = await openMediaSource(this.video);
    if (gen !== this.gen || this.stopped) return;
    const sb = ms.addSourceBuffer(m.mime);
    sb.mode = 'segments';
    this.sb = sb;
    this.onState(`${m.codec || ''} ${m.width || ''}x${m.height || ''}${m.audio ? ' + audio' : ''}`, 'ok');
    this.pump();
  }

  onBinary(buf) {
    this.queue.push(buf);
    if (this.queue.length > 60) this.queue.splice(1, this.queue.length - 30); // keep the init, drop a backlog
    this.pump();
  }

  async pump() {
    if (!this.sb || this.pumping) return;
    this.pumping = true;
    try {
      while (this.sb && this.queue.length) await this.appendOne(this.sb, this.queue.shift());
    } catch (e) {
      this.onState(e.message, 'error');
      if (this.ws) this.ws.close();
    } finally {
      this.pumping = false;
    }
  }

  async appendOne(sb, buf) {
    try {
      await sbAppend(sb, buf);
    } catch (e) {
      if (e.name !== 'QuotaExceededError') throw e;
      await this.trim(sb, 2);
      await sbAppend(sb, buf);
    }
    await this.trim(sb, 10);
    this.followEdge();
  }

  // Keeps about `keep` seconds behind the playhead.
  async trim(sb, keep) {
    const b = sb.buffered;
    if (!b.length) return;
    const cut = Math.min(this.video.currentTime, b.end(b.length - 1)) - keep;
    if (cut - b.start(0) > 2) await sbRemove(sb, 0, cut);
  }

  // Stays near the live edge (after a jump or when playback fell behind).
  followEdge() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (this.jumpPending || v.currentTime < b.start(b.length - 1) || end - v.currentTime > 3) {
      v.currentTime = Math.max(b.start(b.length - 1), end - 0.5);
      this.jumpPending = false;
    }
    if (v.paused) v.play().catch(() => {});
  }
}

// ----------------------------------------------------------------- VOD ----

// Parses an OxiNVR playlist: [{url, off, len, dur, t, init, wall}] where t is
// the playlist time (s) and wall the wall clock (ms) of each fragment.
function parsePlaylist(text) {
  const lines = text.split('\n').map((l) => l.trim());
  if (lines[0] !== '#EXTM3U') throw new Error('not an HLS playlist');
  const frags = [];
  let t = 0, wall = null, init = null, dur = 0, range = null, disc = false;
  for (const l of lines.slice(1)) {
    if (l.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) wall = Date.parse(l.slice(25));
    else if (l.startsWith('#EXT-X-MAP:')) init = parseMap(l.slice(11));
    else if (l.startsWith('#EXTINF:')) dur = parseFloat(l.slice(8));
    else if (l.startsWith('#EXT-X-BYTERANGE:')) range = parseRange(l.slice(17));
    else if (l === '#EXT-X-DISCONTINUITY') disc = true;
    else if (l && !l.startsWith('#')) {
      frags.push({ url: l, off: range[1], len: range[0], dur, t, init, wall, disc });
      t += dur;
      wall += dur * 1000;
      disc = false;
    }
  }
  return frags;
}

function parseRange(s) {
  const [len, off] = s.split('@').map(Number);
  return [len, off || 0];
}

function parseMap(s) {
  const uri = /URI="([^"]*)"/.exec(s);
  const br = /BYTERANGE="([^"]*)"/.exec(s);
  const [len, off] = br ? parseRange(br[1]) : [0, 0];
  return { url: uri && uri[1], off, len };
}

// The MIME type of an init segment: avc1/hvc1 from its sample entry (+ AAC).
function mimeOfInit(buf) {
  const b = new Uint8Array(buf);
  const find = (tag) => {
    const t = [...tag].map((c) => c.charCodeAt(0));
    for (let i = 4; i + 4 <= b.length; i++) if (t.every((c, j) => b[i + j] === c)) return i;
    return -1;
  };
  const codecs = [];
  const avcC = find('avcC');
  const hev = find('hvcC');
  if (avcC > 0) codecs.push('avc1.' + [1, 2, 3].map((k) => pad(b[avcC + 4 + k].toString(16))).join(''));
  else if (hev > 0) codecs.push(find('hev1') > 0 ? 'hev1.1.6.L93.B0' : 'hvc1.1.6.L93.B0');
  if (find('mp4a') > 0) codecs.push('mp4a.40.2');
  return `video/mp4; codecs="${codecs.join(', ')}"`;
}

async function fetchRange(url, off, len, signal) {
  const r = await fetch(url, { headers: { Range: `bytes=${off}-${off + len - 1}` }, credentials: 'same-origin', signal });
  await Ox.checkResponse(r);
  return r.arrayBuffer();
}

// Plays a recorded span: load(url) then seek(t) / seekWall(ms).
class VodPlayer {
  constructor(video, onState) {
    this.video = video;
    this.onState = onState || (() => {});
    this.frags = [];
    this.inits = new Map();
    this.gen = 0;
    this.onTime = () => this.fill();
    video.addEventListener('timeupdate', this.onTime);
    video.addEventListener('seeking', this.onTime);
    this.gapTimer = setInterval(() => this.skipGap(), 250);
  }

  destroy() {
    clearInterval(this.gapTimer);
    this.gen++;
    if (this.abort) this.abort.abort();
    this.video.removeEventListener('timeupdate', this.onTime);
    this.video.removeEventListener('seeking', this.onTime);
    detachVideo(this.video);
  }

  // Loads a playlist; resolves when the video can be seeked.
  async load(url) {
    const gen = ++this.gen;
    if (this.abort) this.abort.abort();
    this.abort = new AbortController();
    this.ms = null; // fill() waits for the new source
    const r = await Ox.checkResponse(await fetch(url, { credentials: 'same-origin', signal: this.abort.signal }));
    const frags = parsePlaylist(await r.text());
    if (!frags.length) throw new Error('nothing recorded in this span');
    const ms = await openMediaSource(this.video);
    if (gen !== this.gen) return;
    this.inits.clear();
    Object.assign(this, { frags, ms, sb: null, mime: null, lastInit: null, next: 0, loading: false });
    const last = frags[frags.length - 1];
    ms.duration = last.t + last.dur;
  }

  get start() {
    return this.frags.length ? this.frags[0].wall : null;
  }

  get end() {
    const f = this.frags[this.frags.length - 1];
    return f ? f.wall + f.dur * 1000 : null;
  }

  // Wall clock (ms) of playlist time t.
  wallAt(t) {
    const f = this.fragAt(t);
    return f ? f.wall + (t - f.t) * 1000 : null;
  }

  // Playlist time of wall clock ms (the next recorded moment if ms is in a gap).
  timeOf(ms) {
    for (const f of this.frags) {
      if (ms < f.wall) return f.t;
      if (ms < f.wall + f.dur * 1000) return f.t + (ms - f.wall) / 1000;
    }
    return null;
  }

  fragAt(t) {
    let lo = 0, hi = this.frags.length - 1;
    if (hi < 0) return null;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.frags[mid].t <= t) lo = mid;
      else hi = mid - 1;
    }
    return this.frags[lo];
  }

  seekWall(ms) {
    const t = this.timeOf(ms);
    if (t !== null) this.seek(t);
    return t !== null;
  }

  seek(t) {
    this.video.currentTime = t;
    this.fill();
  }

  // Fetches fragments until ~20 s ahead of the playhead are buffered.
  async fill() {
    if (!this.ms || this.loading || this.ms.readyState === 'closed') return;
    const v = this.video;
    const cur = this.fragAt(v.currentTime);
    if (!cur) return;
    if (!this.isBuffered(v.currentTime)) this.next = this.frags.indexOf(cur);
    const ahead = this.frags[this.next];
    if (!ahead || ahead.t > v.currentTime + 20) return this.finish();
    this.loading = true;
    const gen = this.gen;
    try {
      await this.appendFrag(ahead, gen);
      this.next++;
    } catch (e) {
      if (gen === this.gen && e.name !== 'AbortError') this.onState(e.message, 'error');
      if (gen === this.gen) this.loading = false;
      return;
    }
    this.loading = false;
    this.fill();
  }

  // Files meet with holes of a few ms in the buffered ranges (a track's last
  // frame ends before the next file's first); the browser stalls at them, so
  // a stalled playhead at most 1 s before the next range jumps there.
  skipGap() {
    const v = this.video;
    if (v.paused || v.seeking || v.readyState >= 3 || !this.ms) return;
    const b = v.buffered, t = v.currentTime;
    for (let i = 0; i < b.length; i++) {
      const nearEnd = i === 0 || b.end(i - 1) - t < 0.2;
      if (b.start(i) > t && b.start(i) - t < 1 && nearEnd) {
        v.currentTime = b.start(i) + 0.001;
        return;
      }
    }
  }

  isBuffered(t) {
    const b = this.video.buffered;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) - 0.05 && t < b.end(i)) return true;
    return false;
  }

  finish() {
    if (this.next >= this.frags.length && this.ms.readyState === 'open' && this.sb && !this.sb.updating) {
      try {
        this.ms.endOfStream();
      } catch (e) {
        /* already ended */
      }
    }
  }

  // Appends a fragment (after its file's init if that is not the last one
  // appended); throws AbortError once another playlist was loaded (gen).
  async appendFrag(f, gen) {
    const signal = this.abort.signal;
    const current = () => {
      if (gen !== this.gen) throw new DOMException('another playlist was loaded', 'AbortError');
    };
    if (this.lastInit !== f.init.url) await this.appendInit(f.init, signal, current);
    const data = await fetchRange(f.url, f.off, f.len, signal);
    current();
    await this.trim();
    current();
    await sbAppend(this.sb, data);
  }

  async appendInit(init, signal, current) {
    let data = this.inits.get(init.url);
    if (!data) {
      data = await fetchRange(init.url, init.off, init.len, signal);
      this.inits.set(init.url, data);
    }
    current();
    const mime = mimeOfInit(data);
    if (!MSE.isTypeSupported(mime)) throw new Error(`This browser cannot play this recording (${mime}); export it instead.`);
    if (!this.sb) {
      this.sb = this.ms.addSourceBuffer(mime);
      this.sb.mode = 'segments';
    } else if (mime !== this.mime && this.sb.changeType) this.sb.changeType(mime);
    this.mime = mime;
    await sbAppend(this.sb, data);
    this.lastInit = init.url;
  }

  // Drops what lies more than 30 s behind the playhead.
  async trim() {
    const b = this.sb.buffered;
    const cut = this.video.currentTime - 30;
    if (b.length && cut - b.start(0) > 10) await sbRemove(this.sb, 0, cut);
  }
}

// ------------------------------------------------------------ timeline ----

// "+1 h 0 min" / "-1 h 0 min": how far a clock step moved the clock.
function stepText(ms) {
  return (ms < 0 ? '-' : '+') + Ox.fmtDuration(Math.abs(ms));
}

// A day's recordings on a canvas: spans, gaps, an events lane, a cursor.
// opts.onSeek(ms) fires on click and at the end of a drag; opts.onView() after zoom.
// The events lane: top and height in css px; bar colours by event kind.
const EV_LANE = [54, 14];
const EV_COLOURS = { motion: '#d9a400', object: '#e0663a', manual: '#4aa3df', external: '#a77bdb' };

class Timeline {
  constructor(canvas, opts) {
    this.c = canvas;
    this.opts = opts;
    this.spans = [];
    this.gaps = [];
    this.events = []; // { id, kind, label, start_ms, end_ms (null: ongoing) }, drawn in the events lane
    this.steps = []; // clock steps: { at_ms, before_ms, step_ms }
    this.cursor = null;
    canvas.timeline = this; // for the browser tests
    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    canvas.addEventListener('pointerup', (e) => this.up(e));
    canvas.addEventListener('pointerleave', () => ((this.hover = undefined), this.draw()));
    canvas.addEventListener('wheel', (e) => this.wheel(e), { passive: false });
    this.resize = () => this.draw();
    window.addEventListener('resize', this.resize);
  }

  destroy() {
    window.removeEventListener('resize', this.resize);
  }

  setDay(day) {
    this.day = day;
    this.view = [day, day + 86400000];
  }

  // The view that shows every span, with a little margin (at least 2 min).
  fit() {
    if (!this.spans.length) return this.setDay(this.day);
    let a = Math.min(...this.spans.map((s) => s[0]));
    let b = Math.max(...this.spans.map((s) => s[1]));
    const margin = Math.max((b - a) * 0.05, 60000 - (b - a) / 2, 5000);
    this.setView(a - margin, b + margin);
  }

  setView(a, b) {
    const min = 10000;
    if (b - a < min) (a = (a + b - min) / 2), (b = a + min);
    const d0 = this.day, d1 = this.day + 86400000;
    const w = Math.min(b - a, d1 - d0);
    a = Math.max(d0, Math.min(a, d1 - w));
    this.view = [a, a + w];
    this.draw();
    if (this.opts.onView) this.opts.onView(this.view);
  }

  zoom(factor, at) {
    const [a, b] = this.view;
    const c = at === undefined ? (this.cursor !== null && this.cursor >= a && this.cursor <= b ? this.cursor : (a + b) / 2) : at;
    this.setView(c - (c - a) * factor, c + (b - c) * factor);
  }

  timeAtX(x) {
    const [a, b] = this.view;
    return a + (x / this.c.clientWidth) * (b - a);
  }

  xOf(ms) {
    const [a, b] = this.view;
    return ((ms - a) / (b - a)) * this.c.clientWidth;
  }

  down(e) {
    this.dragging = true;
    this.c.setPointerCapture(e.pointerId);
    this.move(e);
  }

  move(e) {
    const x = e.offsetX;
    this.hover = this.timeAtX(x);
    if (this.dragging) this.cursor = this.hover;
    this.draw();
  }

  up(e) {
    if (!this.dragging) return;
    this.dragging = false;
    const ev = this.eventAt(e.offsetX, e.offsetY);
    this.cursor = ev ? ev.start_ms : this.timeAtX(e.offsetX);
    this.draw();
    this.opts.onSeek(this.cursor);
  }

  wheel(e) {
    e.preventDefault();
    this.zoom(e.deltaY > 0 ? 1.25 : 0.8, this.timeAtX(e.offsetX));
  }

  setCursor(ms) {
    if (this.dragging) return;
    this.cursor = ms;
    this.draw();
  }

  draw() {
    const c = this.c;
    const ctx = clearCanvas(c);
    if (!ctx) return;
    const [g, w, hgt] = ctx;
    this.drawLane(g, 22, 26, 'recordings', this.spans, '#2e8b57');
    this.drawLane(g, 22, 26, null, this.gaps, '#8b3a3a');
    this.drawBounds(g, 22, 26);
    this.drawEvents(g, EV_LANE[0], EV_LANE[1]);
    this.drawAxis(g, w, hgt);
    this.drawSteps(g);
    this.drawMark(g, this.cursor, '#fff', hgt);
    if (this.hover !== undefined) this.drawHover(g, w, hgt);
  }

  drawHover(g, w, hgt) {
    const x = this.xOf(this.hover);
    const label = fmtClock(this.hover);
    g.fillStyle = '#c7ced9';
    g.font = '11px sans-serif';
    g.fillText(label, Math.min(Math.max(0, x - 24), w - 50), hgt - 2);
  }

  drawLane(g, y, hh, label, list, color) {
    const w = this.c.clientWidth;
    if (label) {
      g.fillStyle = '#222832';
      g.fillRect(0, y, w, hh);
    }
    g.fillStyle = color;
    for (const [a, b] of list) {
      const x0 = Math.max(0, this.xOf(a)), x1 = Math.min(w, this.xOf(b));
      if (x1 >= 0 && x0 <= w) g.fillRect(x0, y, Math.max(1, x1 - x0), hh);
    }
    if (label) {
      g.fillStyle = '#8b95a5';
      g.font = '10px sans-serif';
      g.fillText(label, 3, y + hh - 3);
    }
  }

  // Events as bars coloured by kind, at least 3 px wide so a short one stays clickable.
  drawEvents(g, y, hh) {
    this.drawLane(g, y, hh, this.events.length ? 'events' : 'events: none on this day', [], '');
    const w = this.c.clientWidth;
    for (const ev of this.events) {
      const [x0, x1] = this.eventXs(ev);
      if (x1 < 0 || x0 > w) continue;
      g.fillStyle = EV_COLOURS[ev.kind] || EV_COLOURS.manual;
      g.fillRect(x0, y + 1, x1 - x0, hh - 2);
    }
  }

  eventXs(ev) {
    const x0 = Math.floor(this.xOf(ev.start_ms));
    return [x0, Math.max(x0 + 3, this.xOf(ev.end_ms == null ? Date.now() : ev.end_ms))];
  }

  // The event drawn under (x, y) in the events lane (2 px of slack) whose start is nearest, if any.
  eventAt(x, y) {
    if (y < EV_LANE[0] - 2 || y > EV_LANE[0] + EV_LANE[1] + 2) return null;
    let best = null;
    for (const ev of this.events) {
      const [x0, x1] = this.eventXs(ev);
      if (x >= x0 - 2 && x <= x1 + 2 && (!best || Math.abs(x - x0) < Math.abs(x - this.xOf(best.start_ms)))) best = ev;
    }
    return best;
  }

  // Thin marks where one recorded file ends and the next begins (when there is room).
  drawBounds(g, y, hh) {
    const [a, b] = this.view;
    const shown = (this.bounds || []).filter((t) => t > a && t < b);
    if (shown.length * 4 > this.c.clientWidth) return;
    g.fillStyle = '#1d5c3a';
    for (const t of shown) g.fillRect(Math.round(this.xOf(t)), y, 1, hh);
  }

  drawAxis(g, w, hgt) {
    const [a, b] = this.view;
    const steps = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 10800].map((s) => s * 1000);
    const step = steps.find((s) => (w / ((b - a) / s)) >= 70) || 21600000;
    g.fillStyle = '#8b95a5';
    g.font = '11px sans-serif';
    g.strokeStyle = '#3a4250';
    for (let t = Math.ceil(a / step) * step; t <= b; t += step) {
      const x = Math.round(this.xOf(t)) + 0.5;
      g.beginPath();
      g.moveTo(x, 0);
      g.lineTo(x, 18);
      g.stroke();
      g.fillText(step < 60000 ? fmtClock(t) : fmtClock(t).slice(0, 5), x + 3, 12);
    }
  }

  // Where the wall clock jumped (both sides): recordings around it keep the
  // times the clock gave them, so after a step back two can cover one time.
  drawSteps(g) {
    const w = this.c.clientWidth;
    g.font = '10px sans-serif';
    for (const s of this.steps) {
      for (const [t, label] of [[s.at_ms, `clock ${stepText(s.step_ms)}`], [s.before_ms, 'clock stepped']]) {
        const x = Math.round(this.xOf(t)) + 0.5;
        if (x < 0 || x > w) continue;
        g.fillStyle = '#e07b00';
        g.fillRect(x - 1, 16, 2, 40);
        g.fillText(label, Math.min(x + 3, w - 70), 14);
      }
    }
  }

  drawMark(g, ms, color, hgt) {
    if (ms === null || ms === undefined) return;
    const x = Math.round(this.xOf(ms)) + 0.5;
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    g.moveTo(x, 16);
    g.lineTo(x, hgt);
    g.stroke();
    g.lineWidth = 1;
  }
}

// --------------------------------------------------------------- chart ----

// A small line chart of recent values on a canvas (e.g. kbit/s every 2 s).
// Sizes a canvas to its box at the screen's pixel ratio and clears it:
// [context, css width, css height], or null while it is not laid out.
function clearCanvas(c) {
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, hgt = c.clientHeight;
  if (!w) return null;
  c.width = Math.round(w * dpr);
  c.height = Math.round(hgt * dpr);
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, hgt);
  return [g, w, hgt];
}

// `samples`: [time ms, value] pairs, oldest first; the chart spans `span` ms
// up to the newest sample.
function drawChart(canvas, samples, color, unit, span) {
  const ctx = clearCanvas(canvas);
  if (!ctx) return;
  const [g, w, hgt] = ctx;
  const values = samples.map((p) => p[1]);
  const max = Math.max(1, ...values) * 1.15;
  const end = samples.length ? samples[samples.length - 1][0] : 0;
  g.strokeStyle = '#3a4250';
  g.strokeRect(0.5, 0.5, w - 1, hgt - 1);
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.beginPath();
  samples.forEach(([t, v], i) => {
    const x = w - ((end - t) / span) * w;
    const y = hgt - 4 - (v / max) * (hgt - 18);
    if (i) g.lineTo(x, y);
    else g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = '#c7ced9';
  g.font = '11px sans-serif';
  const last = values.length ? `now ${Math.round(values[values.length - 1])} · ` : '';
  g.fillText(samples.length ? `${last}max ${Math.round(max / 1.15)} ${unit}` : 'no samples yet', 4, 12);
}

Object.assign(Ox, { LivePlayer, VodPlayer, Timeline, drawChart, parsePlaylist, mimeOfInit });
