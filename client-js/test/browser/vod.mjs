// Plays an HLS VOD playlist (a quiccast recording) to its end with hls.js
// in headless Chromium, at 4x speed, and prints a JSON report on stdout:
// {duration, currentTime, ended, frames, hls, errors}. Exits non-zero when
// it does not reach the end.
//
//   node test/browser/vod.mjs <playlist-url>
//
// The page and hls.js (vendor/hls.min.mjs) come from a server on loopback
// that this script starts; the playlist from wherever it is (the origin
// answers with Access-Control-Allow-Origin: *).
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [playlist] = process.argv.slice(2);
if (!playlist) {
  console.error('usage: node vod.mjs <playlist-url>');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const hlsJS = readFileSync(join(here, '..', '..', 'vendor', 'hls.min.mjs'));
const page = `<!doctype html><meta charset="utf-8"><video id="v" muted playsinline></video>
<script type="module">
import Hls from '/hls.min.mjs';
const v = document.getElementById('v');
const r = window.__vod = { errors: [], ended: false, hls: Hls.version };
const hls = new Hls();
hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) r.errors.push(d.type + ' ' + d.details); });
hls.loadSource(${JSON.stringify(playlist)});
hls.attachMedia(v);
v.addEventListener('playing', () => { v.playbackRate = 4; });
v.addEventListener('ended', () => { r.ended = true; });
v.play().catch((e) => r.errors.push(String(e)));
</script>`;
const server = createServer((req, res) => {
  if (req.url === '/hls.min.mjs') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(hlsJS);
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end(page);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const addr = /** @type {import('node:net').AddressInfo} */ (server.address());

const profile = mkdtempSync(join(tmpdir(), 'qc-vod-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let code = 1;
try {
  const p = await context.newPage();
  await p.goto(`http://127.0.0.1:${addr.port}/`);
  const deadline = Date.now() + Number(process.env.QC_VOD_TIMEOUT || 120) * 1000;
  /** @type {any} */
  let rep;
  for (;;) {
    rep = await p.evaluate(() => {
      const v = /** @type {HTMLVideoElement} */ (document.getElementById('v'));
      const r = /** @type {any} */ (window).__vod || {};
      return { ...r, duration: v.duration, currentTime: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames };
    });
    if (rep.ended || rep.errors?.length || Date.now() > deadline) break;
    await new Promise((ok) => setTimeout(ok, 200));
  }
  console.log(JSON.stringify(rep));
  code = rep.ended && !rep.errors.length ? 0 : 1;
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
