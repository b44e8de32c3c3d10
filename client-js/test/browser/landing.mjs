// Opens an edge's landing page (/) in headless Chromium, checks that it
// lists <broadcast> with nobody watching, then plays the broadcast's watch
// page (WebSocket) in a second tab and waits for the landing page's own
// refresh to show "1 watching"; clicks the card and checks it leads to the
// watch page. Screenshots at three widths (no sideways scrolling at any);
// prints a JSON report on stdout; exits non-zero when any of it fails.
//
//   node test/browser/landing.mjs <edge-url> <broadcast> <screenshot-prefix>
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [edge, broadcast, prefix] = process.argv.slice(2);
if (!prefix) {
  console.error('usage: node landing.mjs <edge-url> <broadcast> <screenshot-prefix>');
  process.exit(2);
}
const timeout = Number(process.env.QC_WATCH_PLAY_TIMEOUT || 90) * 1000;
const profile = mkdtempSync(join(tmpdir(), 'quiccast-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let code = 0;
const report = { step: 'load', logs: [], shots: [] };
const card = `#list li[data-name="${broadcast}"]`;
const viewersOf = (sel) => document.querySelector(sel)?.querySelector('.viewers')?.textContent;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (report.logs.length < 30) report.logs.push(`${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => report.logs.push(`pageerror: ${e.message}`));
  const resp = await page.goto(new URL('/', edge).href);
  report.status = resp ? resp.status() : 0;
  await page.waitForSelector(card, { timeout });
  report.before = await page.evaluate(viewersOf, card);

  report.step = 'a viewer counted';
  const watch = await context.newPage();
  await watch.goto(new URL('/watch/' + broadcast + '?transport=websocket', edge).href);
  await watch.waitForFunction(() => document.querySelector('video').currentTime > 0.5, null, { timeout });
  await page.bringToFront(); // a background tab's timers are throttled
  await page.waitForFunction(([sel]) => {
    const v = document.querySelector(sel)?.querySelector('.viewers')?.textContent;
    return v === '1 watching' && document.body.dataset.refreshed;
  }, [card], { timeout, polling: 200 });
  report.after = await page.evaluate(viewersOf, card);

  report.step = 'screenshots';
  for (const [w, h] of [[360, 740], [1280, 800], [3840, 2160]]) {
    await page.setViewportSize({ width: w, height: h });
    const path = `${prefix}-${w}x${h}.png`;
    await page.screenshot({ path, fullPage: true });
    const fit = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    report.shots.push({ path, width: w, ...fit });
  }

  report.step = 'the card leads to the watch page';
  await page.setViewportSize({ width: 1280, height: 800 });
  await Promise.all([page.waitForURL((u) => u.pathname === '/watch/' + broadcast, { timeout }), page.click(`${card} a`)]);
  report.clicked = new URL(page.url()).pathname;
  report.step = 'done';
} catch (e) {
  console.error('FAIL at', report.step + ':', e.message);
  code = 1;
  try { await context.pages()[0].screenshot({ path: `${prefix}-failed.png`, fullPage: true }); } catch { /* best effort */ }
}
console.log(JSON.stringify(report));
await context.close();
rmSync(profile, { recursive: true, force: true });
process.exit(code);
