// Opens a quiccast node's dashboard in headless Chromium: logs in through
// the form with the admin token, waits until the broadcast's card shows
// viewers and a chart of at least <points> polls, and its preview (the
// edge's watch page, muted, in an iframe) plays; saves a screenshot and
// prints a JSON report on stdout. Exits non-zero when any of it fails.
//
//   node test/browser/dashboard.mjs <dashboard-url> <token> <broadcast> <screenshot.png> [points] [watch-url]
//
// With a watch-url (an edge's watch page over WebSocket), it then plays
// that page, clicks the card's "Kick viewers" and waits for the page's
// player to stop with 4410 instead of reconnecting.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, token, broadcast, shot, pointsArg, watchURL] = process.argv.slice(2);
if (!shot) {
  console.error('usage: node dashboard.mjs <dashboard-url> <token> <broadcast> <screenshot.png> [points]');
  process.exit(2);
}
const points = Number(pointsArg || 5);
const timeout = Number(process.env.QC_WATCH_PLAY_TIMEOUT || 90) * 1000;

// Flags from shared/STACK.md. No autoplay flag: a muted preview must play
// under the browser's default policy.
const profile = mkdtempSync(join(tmpdir(), 'quiccast-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1100, height: 760 },
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let code = 0;
const report = { urls: [], logs: [] };
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (report.logs.length < 30) report.logs.push(`${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => report.logs.push(`pageerror: ${e.message}`));
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) report.urls.push(f.url()); });
  const first = await page.goto(url);
  report.loginStatus = first ? first.status() : 0;
  await page.fill('#token', token, { timeout });
  await Promise.all([page.waitForURL((u) => u.pathname === '/dashboard', { timeout }), page.click('#login')]);
  const card = `.card[data-broadcast="${broadcast}"]`;
  await page.waitForFunction(([sel, n]) => {
    const c = document.querySelector(sel);
    return c && Number(c.dataset.points) >= n && Number(c.dataset.viewers) > 0;
  }, [card, points], { timeout });
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'qc_admin');
  report.cookie = c ? { httpOnly: c.httpOnly, sameSite: c.sameSite, isToken: c.value === token } : null;
  // The preview: the edge's watch page, muted, playing.
  let frame = null;
  await page.waitForFunction(() => document.querySelector('.preview')?.src, null, { timeout });
  const deadline = Date.now() + timeout;
  while (!frame && Date.now() < deadline) {
    frame = page.frames().find((f) => f.url().includes('/watch/' + broadcast));
    if (!frame) await page.waitForTimeout(100);
  }
  if (!frame) throw new Error('no preview frame');
  await frame.waitForFunction(() => {
    const v = document.querySelector('video');
    return v && v.currentTime > 1 && v.readyState >= 2;
  }, null, { timeout });
  report.preview = await frame.evaluate(() => {
    const v = document.querySelector('video');
    return { url: location.href, currentTime: v.currentTime, muted: v.muted, paused: v.paused, width: v.videoWidth, height: v.videoHeight };
  });
  report.card = await page.evaluate((sel) => {
    const c = document.querySelector(sel);
    return { viewers: Number(c.dataset.viewers), points: Number(c.dataset.points),
      polyline: c.querySelector('polyline').getAttribute('points').trim().split(/\s+/).length,
      facts: c.querySelector('.facts').textContent, viewersText: c.querySelector('.viewers').textContent,
      nodes: document.querySelectorAll('#nodes tbody tr').length, status: document.getElementById('status').textContent };
  }, card);
  await page.screenshot({ path: shot, fullPage: true });
  report.screenshot = shot;
  if (watchURL) {
    const watch = await context.newPage();
    watch.on('console', (m) => { if (report.logs.length < 60) report.logs.push(`watch ${m.type()}: ${m.text()}`); });
    report.step = 'watch page plays';
    await watch.goto(watchURL);
    await watch.waitForFunction(() => document.querySelector('video').currentTime > 1, null, { timeout });
    report.step = 'kick answered';
    await page.bringToFront(); // a background page's rAF polling stalls
    await page.click(`${card} .kick`);
    await page.waitForFunction(() => document.body.dataset.lastAction, null, { timeout, polling: 100 });
    report.step = 'watch page refused';
    await watch.bringToFront();
    await watch.waitForFunction(() => document.getElementById('status').dataset.state === 'refused', null, { timeout, polling: 100 });
    report.step = 'done';
    report.kick = {
      answer: await page.evaluate(() => document.body.dataset.lastAction),
      watch: await watch.evaluate(() => document.getElementById('status').textContent),
    };
  }
} catch (e) {
  console.error('FAIL:', e.message);
  code = 1;
  try { await context.pages()[0].screenshot({ path: shot, fullPage: true }); } catch { /* best effort */ }
}
console.log(JSON.stringify(report));
await context.close();
rmSync(profile, { recursive: true, force: true });
process.exit(code);
