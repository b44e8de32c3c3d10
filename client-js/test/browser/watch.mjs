// Opens a quiccast watch page in headless Chromium and checks that video
// plays: currentTime advances and frames are decoded. After an optional
// warm-up it samples, for the given seconds, glass-to-glass per appended
// object (capture wall-clock → SourceBuffer append done) and the on-screen
// latency, and records the player's connection events. Prints a JSON
// report on stdout; exits non-zero when playback does not happen.
//
//   node test/browser/watch.mjs <url> [screenshot.png] [seconds] [warmup-seconds]
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, shot, secondsArg, warmupArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node watch.mjs <url> [screenshot.png] [seconds] [warmup-seconds]');
  process.exit(2);
}
const seconds = Number(secondsArg || 3);
const warmup = Number(warmupArg || 0);

// Flags from shared/STACK.md; never --disable-quic (it disables WebTransport).
const profile = mkdtempSync(join(tmpdir(), 'quiccast-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 960, height: 600 },
  args: [
    '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
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
  await page.goto(url);
  const sample = () => page.evaluate(() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality();
    const p = /** @type {any} */ (window).quiccast;
    const ranges = [];
    for (let i = 0; i < v.buffered.length; i++) ranges.push([v.buffered.start(i), v.buffered.end(i)]);
    // hls: set when the page plays LL-HLS through hls.js.
    const t = p && p.current;
    const hls = t && t.name === 'hls' && t.info ? t.info() : null;
    return { currentTime: v.currentTime, readyState: v.readyState, ranges, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames, stats: p ? p.stats : null, hls };
  });
  let playing = true;
  try {
    await page.waitForFunction(() => {
      const v = document.querySelector('video');
      return v && v.currentTime > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    }, null, { timeout: 20000 });
  } catch (e) {
    fail(`no playback within 20 s: ${JSON.stringify(await sample())}\n${logs.join('\n')}`);
    playing = false;
  }
  if (playing) {
    if (warmup > 0) await page.waitForTimeout(warmup * 1000);
    await page.evaluate(() => {
      const w = /** @type {any} */ (window);
      w.__g2g = [];
      w.__events = [];
      w.quiccast.addEventListener('appended', (e) => w.__g2g.push(e.detail.g2gMs));
      for (const type of ['connected', 'fallback', 'goaway', 'close', 'ended', 'error']) {
        w.quiccast.addEventListener(type, (e) => w.__events.push({ type, at: Date.now(), detail: e.detail }));
      }
    });
    const a = await sample();
    const latency = [];
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await page.waitForTimeout(250);
      const s = await sample();
      if (s.stats) latency.push(s.stats.latencyMs);
    }
    const b = await sample();
    const { g2g, events } = await page.evaluate(() => ({ g2g: /** @type {any} */ (window).__g2g, events: /** @type {any} */ (window).__events }));
    if (shot) await page.screenshot({ path: shot });
    console.log(JSON.stringify({ first: a, last: b, g2g: summary(g2g), latency: summary(latency), events, logs }));
    if (!(b.currentTime - a.currentTime > seconds * 0.5)) fail(`currentTime went from ${a.currentTime} to ${b.currentTime}`);
    if (!(b.frames - a.frames > seconds * 10)) fail(`decoded frames went from ${a.frames} to ${b.frames}`);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
