// LL-HLS as a player transport: the edge's playlist handed to hls.js in
// low-latency mode (served by the edge as /hls.min.mjs), or, where the
// browser plays HLS itself (Safari), to the video element. It plays into
// the video by itself (ownsMedia), so the player only measures.
import { TransportError, edgeURL, withTimeout } from './transport.js';

/**
 * @param {import('./transport.js').TransportContext} ctx
 * @returns {import('./transport.js').Transport}
 */
export function openHLS(ctx) {
  const video = ctx.video;
  const url = edgeURL(ctx.edge, ctx.edge.protocol, '/hls/' + ctx.broadcast + '/index.m3u8', ctx.token);
  // The edge counts LL-HLS players as viewers, but not previews.
  if (ctx.preview) url.searchParams.set('preview', '1');
  /** @type {any} */ let hls = null;
  let native = false;
  let closed = false;
  let opened = false;
  const counts = { objects: 0, bytes: 0 };
  let stalls = 0; // hls.js's own stall reports
  /** @type {any} */ let catchTimer = null;

  /** @returns {Promise<void>} */
  async function open() {
    /** @type {any} */ let Hls = null;
    try {
      Hls = (await import(new URL('/hls.min.mjs', ctx.edge).href)).default;
    } catch (e) {
      Hls = null; // no hls.js: try the browser's own HLS
    }
    if (closed) throw new TransportError('closed', { unreachable: true });
    if (Hls && Hls.isSupported()) {
      hls = new Hls(hlsConfig(ctx.targetLatency));
      hls.on(Hls.Events.ERROR, (/** @type {string} */ _ev, /** @type {any} */ d) => {
        if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) stalls++;
      });
      hls.on(Hls.Events.FRAG_LOADED, (/** @type {string} */ _ev, /** @type {any} */ d) => {
        counts.objects++;
        counts.bytes += (d.part ? d.part.stats.loaded : d.frag.stats.loaded) || 0;
      });
      await new Promise((resolve, reject) => {
        hls.on(Hls.Events.MANIFEST_PARSED, () => { opened = true; resolve(undefined); });
        hls.on(Hls.Events.ERROR, (/** @type {string} */ _ev, /** @type {any} */ d) => {
          if (!d.fatal || closed) return;
          if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
            hls.recoverMediaError();
            return;
          }
          // 404: no such broadcast; 410: an operator removed this
          // broadcast's viewers (the close codes of the other transports).
          const status = d.response ? d.response.code : 0;
          const code = status === 404 ? 4004 : status === 410 ? 4410 : 0;
          if (!opened) {
            // 404: no such broadcast (yet); anything else: unreachable.
            reject(new TransportError(`LL-HLS: ${d.details}`, { code, unreachable: code === 0 }));
            return;
          }
          // A network error once playing (the edge went away): end this
          // connection; the player reconnects.
          ctx.handler.onClose(code, d.details);
        });
        hls.loadSource(url.href);
        hls.attachMedia(video);
      });
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      native = true;
      video.src = url.href;
      await new Promise((resolve, reject) => {
        video.addEventListener('loadedmetadata', () => resolve(undefined), { once: true });
        video.addEventListener('error', () => reject(new TransportError('native HLS failed to load the playlist', { unreachable: true })), { once: true });
      });
      opened = true;
    } else {
      throw new TransportError('this browser has neither MSE for hls.js nor native HLS', { unreachable: true });
    }
    video.play().catch(() => {});
    if (hls) catchTimer = setInterval(catchUp, 250);
  }

  /** Sets the catch-up rate (catchUpRate); jumps to the target when more than 0.75 s behind it and it is buffered (at the start, after a long stall). */
  function catchUp() {
    if (!hls || video.paused) return;
    const latency = hls.latency;
    const target = hls.targetLatency;
    if (!(latency > 0) || !(target > 0)) return;
    const b = video.buffered;
    const ahead = b.length > 0 ? b.end(b.length - 1) - video.currentTime : 0;
    const sync = hls.liveSyncPosition;
    if (latency - target > 0.75 && sync !== null && sync > video.currentTime && b.length > 0 && sync < b.end(b.length - 1)) {
      video.currentTime = sync;
      return;
    }
    const rate = catchUpRate(latency, target, ahead);
    if (Math.abs(video.playbackRate - rate) > 0.005) video.playbackRate = rate;
  }

  return {
    name: 'hls',
    ownsMedia: true,
    opened: withTimeout(open(), ctx.connectTimeout, () => new TransportError('LL-HLS: no playlist in time', { unreachable: true })),
    close() {
      closed = true;
      clearInterval(catchTimer);
      if (hls) hls.destroy();
      hls = null;
      if (native) {
        video.removeAttribute('src');
        video.load();
      }
    },
    playingDate() {
      if (hls && hls.playingDate) return hls.playingDate.getTime();
      const v = /** @type {any} */ (video);
      if (native && typeof v.getStartDate === 'function') {
        const d = v.getStartDate().getTime();
        if (!isNaN(d)) return d + v.currentTime * 1000;
      }
      return NaN;
    },
    counts: () => ({ ...counts }),
    /** What is playing: hls.js (its version and low-latency setting) or the browser's own HLS. */
    info: () => (hls ? {
      player: 'hls.js', version: hls.constructor.version, lowLatencyMode: !!hls.config.lowLatencyMode,
      latency: hls.latency, targetLatency: hls.targetLatency, stalls, partTarget: hls.latestLevelDetails ? hls.latestLevelDetails.partTarget : 0,
      partHoldBack: hls.latestLevelDetails ? hls.latestLevelDetails.partHoldBack : 0,
    } : { player: native ? 'native' : '' }),
  };
}

/**
 * hls.js settings for a live edge close behind: low-latency mode (blocking
 * playlist reloads, parts, preload hints), the playlist's PART-HOLD-BACK
 * as the distance to the live edge unless the page asked for a target,
 * and a small step (0.1 s) added to the target at each stall instead of
 * hls.js's default 1 s (capped at a target duration either way).
 * @param {number} [target] s behind the live edge (the page's ?latency=)
 * @returns {Record<string, any>}
 */
export function hlsConfig(target) {
  /** @type {Record<string, any>} */
  const cfg = {
    lowLatencyMode: true,
    backBufferLength: 10,
    // hls.js speeds up only with more than a second buffered, which a
    // low-latency live edge never has: catchUp() does it instead (1 turns
    // hls.js's own rate control off).
    maxLiveSyncPlaybackRate: 1,
    liveSyncOnStallIncrease: 0.1,
  };
  if (target && target > 0) {
    cfg.liveSyncDuration = target;
    cfg.liveMaxLatencyDuration = target + 2; // further behind than this: jump to the target
  }
  return cfg;
}

/**
 * The playback rate that brings hls.js back to its target latency: after
 * a stall the playhead stays that much further behind, and hls.js itself
 * speeds up only with over a second buffered. Up to 1.5x (audio keeps its
 * pitch), proportional to how far behind, and only while there is buffer
 * to eat into: never faster than 1x with under 0.1 s ahead.
 * @param {number} latency s behind the live edge (hls.latency)
 * @param {number} target s (hls.targetLatency)
 * @param {number} ahead s buffered ahead of the playhead
 * @returns {number}
 */
export function catchUpRate(latency, target, ahead) {
  const off = latency - target;
  if (!(off > 0.05) || !(ahead > 0.1)) return 1;
  return Math.round(Math.min(1.5, 1 + off * 0.5, 1 + (ahead - 0.1)) * 100) / 100;
}
