// Opens a quiccast watch page in headless Chromium and checks that video
// plays: currentTime advances and frames are decoded. After an optional
// warm-up it samples glass-to-glass per appended object (capture
// wall-clock → SourceBuffer append done) and the on-screen latency, then
// prints a JSON report on stdout; exits non-zero when playback does not
// happen.
//
//   node test/browser/watch.mjs <url> [screenshot.png] [seconds] [warmup-seconds]
//
// seconds > 0 measures for that long; seconds = 0 measures until a line
// "stop" (or the end of input) arrives on stdin, so a test can act on the
// player's state (stop an edge once it plays, say) instead of on a clock.
// A line "sample" on stdin answers with one sample on stderr; "shot W H
// path.png" sets the window to W×H, saves a screenshot and answers with
// the page's layout at that size; "click #id" clicks an element (as a
// person would: a real input event) and answers "clicked #id".
//
// Progress goes to stderr, one line each, for the test to wait on:
//   state loaded | playing | measuring | done
//   event {"type":…,"at":ms,"detail":…}   every player event from the start
//   sample {"at":ms,"currentTime":…,…}    the answer to "sample"
//   shot {"path":…,"width":…,"video":{box},…}  the answer to "shot"
// QC_WATCH_PLAY_TIMEOUT (seconds, default 90) bounds the wait for the first
// frame: a last resort on a very busy machine, not a pace.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const [url, shot, secondsArg, warmupArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node watch.mjs <url> [screenshot.png] [seconds] [warmup-seconds]');
  process.exit(2);
}
const seconds = Number(secondsArg ?? 3);
const warmup = Number(warmupArg || 0);
const playTimeout = Number(process.env.QC_WATCH_PLAY_TIMEOUT || 90) * 1000;

/** @param {string} s */
const progress = (s) => process.stderr.write(s + '\n');

// Commands on stdin: "stop" (or the end of input) ends a measurement of
// seconds = 0; "sample" prints a sample once the page is loaded.
let stopRequested = false;
/** @type {null | (() => Promise<any>)} */
let sampler = null;
/** @type {null | import('playwright-core').Page} */
let loaded = null;
const rl = createInterface({ input: process.stdin });
rl.on('line', (l) => {
  const cmd = l.trim();
  if (cmd === 'stop') stopRequested = true;
  const shot = /^shot (\d+) (\d+) (\S+)$/.exec(cmd);
  if (shot) {
    const [w, h, path] = [Number(shot[1]), Number(shot[2]), shot[3]];
    (loaded ? layoutShot(loaded, w, h, path) : Promise.reject(new Error('page not loaded')))
      .then((l) => progress('shot ' + JSON.stringify(l)), (e) => progress('shot ' + JSON.stringify({ path, error: String(e) })));
  }
  const click = /^click (#[\w-]+)$/.exec(cmd);
  if (click) {
    (loaded ? loaded.click(click[1], { timeout: 10000 }) : Promise.reject(new Error('page not loaded')))
      .then(() => progress('clicked ' + click[1]), (e) => progress(`clicked ${click[1]} failed: ${e}`));
  }
  if (cmd === 'sample') {
    (sampler ? sampler() : Promise.resolve(null)).then((s) => progress('sample ' + JSON.stringify(s)), () => progress('sample null'));
  }
});
rl.on('close', () => { stopRequested = true; });

/**
 * Sets the window to w×h, waits for the layout to settle, saves a
 * screenshot and returns where the page's parts are (viewport pixels).
 * @param {import('playwright-core').Page} page @param {number} w @param {number} h @param {string} path
 */
async function layoutShot(page, w, h, path) {
  await page.setViewportSize({ width: w, height: h });
  // Two frames: the layout at the new size, then a painted frame of it.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.screenshot({ path });
  return page.evaluate(({ path }) => {
    /** @param {Element|null} el */
    const box = (el) => {
      if (!el || /** @type {HTMLElement} */ (el).hidden) return null;
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    };
    const d = document.documentElement;
    return {
      path, width: innerWidth, height: innerHeight, scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
      video: box(document.querySelector('video')), stats: box(document.querySelector('.quiccast-overlay')),
      unmute: box(document.getElementById('unmute')), title: box(document.getElementById('title')),
      badge: box(document.getElementById('badge')), status: box(document.getElementById('status')),
      transports: box(document.getElementById('transports')),
    };
  }, { path });
}

// Flags from shared/STACK.md; never --disable-quic (it disables WebTransport).
const profile = mkdtempSync(join(tmpdir(), 'quiccast-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 960, height: 600 },
  args: [
    '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    // Extra flags from the test (a JSON array), e.g. a host resolver rule.
    ...(process.env.QC_CHROMIUM_ARGS ? JSON.parse(process.env.QC_CHROMIUM_ARGS) : []),
  ],
});
let code = 0;
/** @param {string} msg */
const fail = (msg) => {
  console.error('FAIL:', msg);
  code = 1;
};
/** @param {number[]} xs */
const summary = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return { n: 0 };
  const q = (p) => Math.round(s[Math.min(s.length - 1, Math.floor((s.length - 1) * p))]);
  return { n: s.length, min: Math.round(s[0]), p50: q(0.5), p95: q(0.95), max: Math.round(s[s.length - 1]) };
};
try {
  const page = context.pages()[0] || await context.newPage();
  const logs = [];
  const log = (s) => { if (logs.length < 50) logs.push(s); };
  page.on('console', (m) => log(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`pageerror: ${e.message}`));
  // Every player event, from the start, streamed to the test as it happens.
  await page.exposeFunction('__qcEvent', (/** @type {string} */ ev) => progress('event ' + ev));
  await page.goto(url);
  // The page's module script sets window.quiccast; listen before anything
  // the test does can make the player move.
  await page.waitForFunction(() => /** @type {any} */ (window).quiccast, null, { timeout: playTimeout });
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__g2g = null; // null until the measurement starts
    w.__events = [];
    w.quiccast.addEventListener('appended', (e) => { if (w.__g2g) w.__g2g.push(e.detail.g2gMs); });
    for (const type of ['connected', 'fallback', 'goaway', 'close', 'ended', 'error', 'state', 'catalog', 'tokenexpired']) {
      w.quiccast.addEventListener(type, (e) => {
        const ev = { type, at: Date.now(), detail: e.detail };
        w.__events.push(ev);
        w.__qcEvent(JSON.stringify(ev));
      });
    }
  });
  progress('state loaded');
  const sample = () => page.evaluate(() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality();
    const p = /** @type {any} */ (window).quiccast;
    const ranges = [];
    for (let i = 0; i < v.buffered.length; i++) ranges.push([v.buffered.start(i), v.buffered.end(i)]);
    // hls: set when the page plays LL-HLS through hls.js.
    const t = p && p.current;
    const hls = t && t.name === 'hls' && t.info ? t.info() : null;
    const text = (/** @type {string} */ id) => { const el = document.getElementById(id); return el ? el.textContent : ''; };
    const un = document.getElementById('unmute');
    return {
      at: Date.now(), currentTime: v.currentTime, readyState: v.readyState, ranges, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
      status: text('status'), title: text('title'), badge: text('badge'), muted: v.muted, unmuteShown: !!un && !un.hidden,
      statsPill: !!document.querySelector('.quiccast-overlay'), stats: p ? p.stats : null, hls,
    };
  });
  sampler = sample;
  loaded = page;
  let playing = true;
  try {
    await page.waitForFunction(() => {
      const v = document.querySelector('video');
      return v && v.currentTime > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    }, null, { timeout: playTimeout, polling: 100 });
  } catch (e) {
    fail(`no playback within ${playTimeout / 1000} s: ${JSON.stringify(await sample())}\n${logs.join('\n')}`);
    playing = false;
  }
  if (playing) {
    progress('state playing');
    if (warmup > 0) await page.waitForTimeout(warmup * 1000);
    await page.evaluate(() => { /** @type {any} */ (window).__g2g = []; });
    const a = await sample();
    progress('state measuring');
    const latency = [];
    const end = Date.now() + seconds * 1000;
    while (seconds > 0 ? Date.now() < end : !stopRequested) {
      await page.waitForTimeout(250);
      const s = await sample();
      if (s.stats) latency.push(s.stats.latencyMs);
    }
    const b = await sample();
    const { g2g, events } = await page.evaluate(() => ({ g2g: /** @type {any} */ (window).__g2g, events: /** @type {any} */ (window).__events }));
    if (shot) await page.screenshot({ path: shot });
    console.log(JSON.stringify({ first: a, last: b, g2g: summary(g2g), latency: summary(latency), events, logs }));
    const wall = (b.at - a.at) / 1000;
    // On a starved machine the sampling loop itself runs late (a 2 s
    // window once took 20 s beside two CPU hogs and the rest of the
    // suite): the page must then have played half the window asked for,
    // not half of what the loop took.
    const span = seconds > 0 && wall > 2 * seconds ? seconds : wall;
    if (!(b.currentTime - a.currentTime > span * 0.5)) fail(`currentTime went from ${a.currentTime} to ${b.currentTime} in ${wall} s`);
    if (!(b.frames - a.frames > span * 10)) fail(`decoded frames went from ${a.frames} to ${b.frames} in ${wall} s`);
  }
} finally {
  progress('state done');
  rl.close();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
