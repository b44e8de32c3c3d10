// Opens a quiccast watch page in headless Chromium and checks that video
// plays: currentTime advances and frames are decoded. Prints a JSON report
// on stdout; exits non-zero when playback does not happen.
//
//   node test/browser/watch.mjs <url> [screenshot.png] [seconds]
import { chromium } from 'playwright-core';

const [url, shot, secondsArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node watch.mjs <url> [screenshot.png] [seconds]');
  process.exit(2);
}
const seconds = Number(secondsArg || 3);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
  ],
});
const fail = async (msg) => {
  console.error('FAIL:', msg);
  await browser.close();
  process.exit(1);
};
try {
  const page = await browser.newPage({ viewport: { width: 960, height: 600 } });
  const logs = [];
  const log = (s) => { if (logs.length < 50) logs.push(s); };
  page.on('console', (m) => log(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`pageerror: ${e.message}`));
  await page.goto(url);
  const sample = () => page.evaluate(() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality();
    const p = /** @type {any} */ (window).quiccast;
    // hls: set when the page plays LL-HLS through hls.js.
    const hls = p && p.hls ? { lowLatencyMode: p.hls.lowLatencyMode, version: p.hls.constructor.version, latency: p.hls.latency } : null;
    return { currentTime: v.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames, stats: p ? p.stats : null, hls };
  });
  try {
    await page.waitForFunction(() => {
      const v = document.querySelector('video');
      return v && v.currentTime > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    }, null, { timeout: 20000 });
  } catch (e) {
    await fail(`no playback within 20 s: ${JSON.stringify(await sample())}\n${logs.join('\n')}`);
  }
  const a = await sample();
  await page.waitForTimeout(seconds * 1000);
  const b = await sample();
  if (shot) await page.screenshot({ path: shot });
  console.log(JSON.stringify({ first: a, last: b, logs }));
  if (!(b.currentTime - a.currentTime > seconds * 0.5)) await fail(`currentTime went from ${a.currentTime} to ${b.currentTime}`);
  if (!(b.frames - a.frames > seconds * 10)) await fail(`decoded frames went from ${a.frames} to ${b.frames}`);
} finally {
  await browser.close();
}
