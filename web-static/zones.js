// zones.js: a stream's detection settings on one page (#/zones?stream=NAME):
// the motion/objects switches, and the zone and motion-mask editor drawn on
// a current picture (GET /api/streams/{name}/snapshot). A click (or tap) on
// the picture adds a point; "Add" keeps the polygon as a zone or a mask and
// saves. Every change is one PUT /api/streams/{name} with detect,
// motion_mask and zones; the recorder applies it without a restart.
'use strict';

Ox.page('zones', { title: 'Zones', role: 'operator', render: renderZones });

const SVG = 'http://www.w3.org/2000/svg';
const svgEl = (tag, attrs) => {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
};
const pts = (poly) => poly.map(([x, y]) => `${x},${y}`).join(' ');
const round3 = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;

async function renderZones(view, params) {
  const name = params.get('stream') || '';
  const path = `/api/streams/${encodeURIComponent(name)}`;
  const s = await api('GET', path);
  const z = { detect: s.detect || [], motion_mask: s.motion_mask || [], zones: s.zones || [], draft: [] };
  const box = msgBox();
  const picBox = msgBox();
  const img = h('img.zone-picture', { alt: `Current picture of ${name}` });
  const svg = svgEl('svg', { viewBox: '0 0 1 1', preserveAspectRatio: 'none', class: 'zone-overlay', id: 'zone-overlay' });
  const stage = h('div.zone-stage#zone-stage', {}, img, svg);
  const list = h('div#zone-list');
  const f = {
    kind: h('select', { name: 'kind' }, h('option', { value: 'zone', text: 'Zone' }), h('option', { value: 'mask', text: 'Motion mask (ignored)' })),
    name: h('input', { name: 'zone-name', placeholder: 'e.g. driveway', maxlength: 64 }),
    labels: h('input', { name: 'labels', placeholder: 'person, car (empty: all)', autocapitalize: 'none' }),
    min_score: h('input', { type: 'number', name: 'min_score', min: 0, max: 1, step: 0.05, placeholder: 'any' }),
    required: h('input', { type: 'checkbox', name: 'required' }),
  };
  const save = (what) => busy(null, box, async () => {
    const saved = await api('PUT', path, { detect: z.detect, motion_mask: z.motion_mask, zones: z.zones });
    Object.assign(z, { detect: saved.detect, motion_mask: saved.motion_mask, zones: saved.zones });
    toast(`${name}: ${what}`);
    draw();
  });
  const redraw = () => drawOverlay(svg, z);
  const draw = () => {
    redraw();
    clear(list, zoneTable(z, save), maskTable(z, save));
  };
  svg.addEventListener('click', (e) => {
    const r = svg.getBoundingClientRect();
    if (!r.width || !r.height) return;
    z.draft.push([round3((e.clientX - r.left) / r.width), round3((e.clientY - r.top) / r.height)]);
    redraw();
  });
  const add = h('button.primary#zone-add', { type: 'button', text: 'Add', onclick: () => {
    if (z.draft.length < 3) return box.show('Click at least 3 points on the picture first.');
    if (f.kind.value === 'mask') {
      z.motion_mask = z.motion_mask.concat([z.draft]);
    } else {
      const zone = { name: f.name.value.trim(), polygon: z.draft, labels: f.labels.value.split(',').map((l) => l.trim()).filter(Boolean), required: f.required.checked };
      if (!zone.name) return box.show('Name the zone.');
      if (f.min_score.value !== '') zone.min_score = Number(f.min_score.value);
      z.zones = z.zones.filter((o) => o.name !== zone.name).concat([zone]);
    }
    z.draft = [];
    save(f.kind.value === 'mask' ? 'mask saved' : 'zone saved');
  } });
  const undo = h('button', { type: 'button', text: 'Undo point', onclick: () => (z.draft.pop(), redraw()) });
  const restart = h('button', { type: 'button', text: 'Clear points', onclick: () => ((z.draft = []), redraw()) });
  const refresh = h('button', { type: 'button', text: 'New picture', onclick: (e) => busy(e.target, picBox, () => loadPicture(path, img, picBox)) });
  const toggles = ['motion', 'objects'].map((d) => h('label.inline', {}, h('input', {
    type: 'checkbox', name: 'detect-' + d, checked: z.detect.includes(d),
    onchange: (e) => {
      const on = new Set(z.detect);
      if (e.target.checked) on.add(d).add('motion');
      else if (d === 'motion') on.clear();
      else on.delete(d);
      z.detect = ['motion', 'objects'].filter((x) => on.has(x));
      save(`detection: ${z.detect.join(' + ') || 'off'}`).then(() => {
        toggles.forEach((t) => (t.firstChild.checked = z.detect.includes(t.dataset.detector)));
        if (z.detect.length) loadPicture(path, img, picBox).catch(() => {});
      });
    },
  }), ' ' + (d === 'motion' ? 'Motion' : 'Objects (on moving frames)')));
  toggles.forEach((t, i) => (t.dataset.detector = ['motion', 'objects'][i]));
  append(view, pageHead(`Zones and mask: ${name}`, h('a.button', { href: '#/streams', text: 'Back to streams' })),
    h('div.card', {}, h('h2', { text: 'Detection' }), h('div.row', {}, toggles)),
    h('div.card', {}, h('h2', { text: 'Draw' }),
      h('p.muted', { text: 'Click the picture to add points; a zone counts an object when its feet (the bottom middle of its box) are inside.' }),
      picBox, stage,
      h('div.row', {}, field('Add as', f.kind), field('Zone name', f.name), field('Labels', f.labels), field('Least score', f.min_score)),
      h('div.row', {}, h('label.inline', {}, f.required, ' Required (objects outside every required zone open no event)')),
      box, h('div.tools', {}, add, undo, restart, refresh)),
    list);
  draw();
  await loadPicture(path, img, picBox).catch(() => {});
}

// The stream's current picture as a data: URL (the page's CSP takes no blob: images).
async function loadPicture(path, img, box) {
  box.hide();
  const r = await fetch(`${path}/snapshot`, { credentials: 'same-origin' });
  if (!r.ok) {
    const data = await r.json().catch(() => null);
    img.removeAttribute('src');
    box.show(`No picture: ${(data && data.error) || r.status}. You can still draw on the empty frame.`, 'info');
    return;
  }
  const blob = await r.blob();
  img.src = await new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(blob);
  });
}

function drawOverlay(svg, z) {
  svg.replaceChildren();
  for (const poly of z.motion_mask) svg.append(svgEl('polygon', { points: pts(poly), class: 'mask-poly' }));
  for (const zone of z.zones) {
    svg.append(svgEl('polygon', { points: pts(zone.polygon), class: 'zone-poly' + (zone.required ? ' required' : '') }));
  }
  if (z.draft.length) {
    svg.append(svgEl('polyline', { points: pts(z.draft.concat(z.draft.length > 2 ? [z.draft[0]] : [])), class: 'draft-poly' }));
    for (const [x, y] of z.draft) svg.append(svgEl('circle', { cx: x, cy: y, r: 0.008, class: 'draft-point' }));
  }
}

function zoneTable(z, save) {
  if (!z.zones.length) return h('p.empty', { text: 'No zones: every object counts.' });
  const rows = z.zones.map((zone) => h('tr', { 'data-zone': zone.name }, td(zone.name), td(zone.labels.join(', ') || 'all'),
    td(zone.min_score ?? 'any'), td(zone.required ? 'yes' : 'no'), td(zone.polygon.length),
    h('td.actions', {}, h('button.danger', { type: 'button', text: 'Delete', onclick: () => {
      z.zones = z.zones.filter((o) => o !== zone);
      save(`zone ${zone.name} deleted`);
    } }))));
  return table('zones', ['Zone', 'Labels', 'Least score', 'Required', 'Points', ''], rows);
}

function maskTable(z, save) {
  if (!z.motion_mask.length) return null;
  const rows = z.motion_mask.map((poly, i) => h('tr', {}, td(`Mask ${i + 1}`), td(poly.length),
    h('td.actions', {}, h('button.danger', { type: 'button', text: 'Delete', onclick: () => {
      z.motion_mask = z.motion_mask.filter((p) => p !== poly);
      save('mask deleted');
    } }))));
  return table('masks', ['Motion mask', 'Points', ''], rows);
}
