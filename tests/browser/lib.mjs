// lib.mjs: helpers of the browser tests. Headless Debian Chromium through
// playwright-core, assertions that fail with a message, screenshots, a TOTP
// code generator (RFC 6238, HMAC-SHA1) and ffprobe of downloaded files.
import { createHmac } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = process.env.OXINVR_URL || 'http://127.0.0.1:8080';
export const STREAM = process.env.OXINVR_STREAM || 'cam1';
export const SHOTS = process.env.OXINVR_SCREENSHOTS || 'target/screenshots';
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(SHOTS, { recursive: true });

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'],
  });
}

// Problems the page reported (uncaught errors, CSP violations, failed loads).
export const pageProblems = [];

// A new browser context and page; console errors and page errors are collected.
export async function newPage(browser, opts) {
  const ctx = await browser.newContext(Object.assign({ viewport: { width: 1280, height: 800 }, acceptDownloads: true }, opts));
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageProblems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(t)) pageProblems.push(`console: ${t}`);
  });
  page.setDefaultTimeout(15000);
  return { ctx, page };
}

export class AssertionError extends Error {}

export function assert(cond, message) {
  if (!cond) throw new AssertionError(message);
}

// Waits until fn() (run in node) returns a truthy value; its last error or `what` on timeout.
export async function until(what, fn, ms = 15000, every = 250) {
  const end = Date.now() + ms;
  let last = null;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new AssertionError(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function shot(page, name) {
  await page.waitForTimeout(300);
  // A full-page shot of a scrolled page paints the sticky header mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  return name;
}

// Opens a hash route and waits until its page has rendered (app.js sets
// #view[data-ready] to the hash once the page's render finished).
export async function open(page, hash) {
  if (page.url().startsWith(BASE)) await page.evaluate((h) => (location.hash = h), hash);
  else await page.goto(`${BASE}/${hash}`);
  await page.waitForFunction((h) => document.querySelector('#view').dataset.ready === h, hash);
}

// A visible control (button, link, input, select) that a user cannot reach
// without scrolling sideways: outside the viewport, or cut off by a box that
// clips or scrolls its content. Also any button whose label wrapped (taller
// than one line), and how far the document itself scrolls sideways.
export function layoutProblems(page) {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const out = [];
    const name = (e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''} "${(e.textContent || e.value || e.name || '').trim().slice(0, 30)}"`;
    for (const e of document.querySelectorAll('button, a, input, select')) {
      const r = e.getBoundingClientRect();
      const st = getComputedStyle(e);
      if (!r.width || !r.height || st.visibility === 'hidden') continue;
      if (r.left < -0.5 || r.right > vw + 0.5) out.push(`${name(e)} spans x ${Math.round(r.left)}..${Math.round(r.right)} of a ${vw} px viewport`);
      for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX === 'visible') continue;
        const b = a.getBoundingClientRect();
        if (r.left < b.left - 0.5 || r.right > b.right + 0.5) {
          out.push(`${name(e)} (x ${Math.round(r.left)}..${Math.round(r.right)}) is cut off by ${a.tagName.toLowerCase()}.${a.className} (x ${Math.round(b.left)}..${Math.round(b.right)})`);
          break;
        }
      }
      if (e.tagName === 'BUTTON' && !e.classList.contains('link') && r.height > 56) out.push(`${name(e)} wraps: ${Math.round(r.height)} px tall`);
    }
    const overflow = document.documentElement.scrollWidth - vw;
    if (overflow > 0) out.push(`the document scrolls ${overflow} px sideways`);
    return out;
  });
}

// fetch() inside the page (its cookies): {status, body}.
export function pageFetch(page, path, init) {
  return page.evaluate(async ([p, i]) => {
    const r = await fetch(p, i || {});
    const text = await r.text();
    let body = text;
    try {
      body = JSON.parse(text);
    } catch (e) {
      /* not JSON */
    }
    return { status: r.status, body, headers: Object.fromEntries(r.headers) };
  }, [path, init]);
}

// Text of the first visible error message on the page ('' if none).
export function errorText(page) {
  return page.evaluate(() => {
    const el = [...document.querySelectorAll('.msg.error')].find((e) => !e.hidden && e.offsetParent);
    return el ? el.textContent : '';
  });
}

// The 6-digit TOTP code of a base32 secret at time `ms` (RFC 6238: SHA-1, 30 s).
export function totp(secret, ms = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/[=\s]/g, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`bad base32 character ${c}`);
    bits += v.toString(2).padStart(5, '0');
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(ms / 30000)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const off = mac[19] & 15;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, '0');
}

// ffprobe's JSON (format + streams) of a file.
export function ffprobe(path) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-print_format', 'json', '-show_format', '-show_streams', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new AssertionError(`ffprobe refused ${path}: ${r.stderr || r.error}`);
  return JSON.parse(r.stdout);
}

// Every frame of the file's video decodes (ffmpeg -v error prints nothing).
export function decodesCleanly(path) {
  const r = spawnSync('ffmpeg', ['-v', 'error', '-i', path, '-map', '0:v:0', '-f', 'null', '-'], { encoding: 'utf8' });
  return r.status === 0 && !r.stderr.trim() ? '' : r.stderr || `ffmpeg exit ${r.status}`;
}
