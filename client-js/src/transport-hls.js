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
  /** @type {any} */ let hls = null;
  let native = false;
  let closed = false;
  let opened = false;
  const counts = { objects: 0, bytes: 0 };

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
      hls = new Hls({
        lowLatencyMode: true,
        backBufferLength: 10,
        maxLiveSyncPlaybackRate: 1.2, // catch up with the live edge by playing faster
        liveSyncOnStallIncrease: 0.2,
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
          const code = d.response && d.response.code === 404 ? 4004 : 0;
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
  }

  return {
    name: 'hls',
    ownsMedia: true,
    opened: withTimeout(open(), ctx.connectTimeout, () => new TransportError('LL-HLS: no playlist in time', { unreachable: true })),
    close() {
      closed = true;
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
    info: () => (hls ? { player: 'hls.js', version: hls.constructor.version, lowLatencyMode: !!hls.config.lowLatencyMode } : { player: native ? 'native' : '' }),
  };
}
