// A recording as a player transport: the player's `start` (a wall-clock
// time) is looked up in the node's recordings (/recordings/list), and the
// recording that holds it is played from there with hls.js (served as
// /hls.min.mjs) or the browser's own HLS. It plays into the video by itself
// (ownsMedia); the player only measures.
import { TransportError, edgeURL, withTimeout } from './transport.js';

/**
 * @typedef {object} RecordingInfo
 * @property {string} id
 * @property {string} playlist
 * @property {boolean} ended
 * @property {{start: string, duration: number}[]} spans
 */

/**
 * The recording holding at (ms since the Unix epoch) and the playlist
 * position (s) of at in it, counting only the spans' durations (the
 * playlist has no time between spans). A time between two spans gives
 * the start of the later; one before the first recording its start.
 * @param {RecordingInfo[]} list oldest first
 * @param {number} at
 * @returns {{rec: RecordingInfo, position: number} | null}
 */
export function findPosition(list, at) {
  /** @type {{rec: RecordingInfo, position: number} | null} */ let next = null;
  for (const rec of list) {
    let before = 0;
    for (const s of rec.spans) {
      const from = Date.parse(s.start);
      if (at >= from && at < from + s.duration * 1000) return { rec, position: before + (at - from) / 1000 };
      if (from > at && !next) next = { rec, position: before };
      before += s.duration;
    }
  }
  return next;
}

/**
 * @param {import('./transport.js').TransportContext} ctx
 * @returns {import('./transport.js').Transport}
 */
export function openRecording(ctx) {
  const video = ctx.video;
  /** @type {any} */ let hls = null;
  let native = false;
  let closed = false;
  let opened = false;
  let position = 0;
  const counts = { objects: 0, bytes: 0 };

  /** @returns {Promise<void>} */
  async function open() {
    const at = ctx.start ?? NaN;
    if (isNaN(at)) throw new TransportError('recording: no valid start time', { code: 4000 });
    const listURL = edgeURL(ctx.edge, ctx.edge.protocol, '/recordings/list', ctx.token);
    listURL.searchParams.set('name', ctx.broadcast);
    /** @type {Response} */ let resp;
    try {
      resp = await fetch(listURL.href);
    } catch (e) {
      throw new TransportError(`recording: ${e}`, { unreachable: true });
    }
    if (resp.status === 401 || resp.status === 403) throw new TransportError('recording: play token refused', { code: resp.status === 401 ? 4001 : 4003 });
    if (!resp.ok) throw new TransportError(`recording: list answered ${resp.status}`, { code: resp.status === 404 ? 4004 : 0, unreachable: resp.status !== 404 });
    const found = findPosition(/** @type {RecordingInfo[]} */ (await resp.json()), at);
    if (!found) throw new TransportError(`no recording of ${ctx.broadcast} at ${new Date(at).toISOString()}`, { code: 4004 });
    position = found.position;
    const url = edgeURL(ctx.edge, ctx.edge.protocol, found.rec.playlist, ctx.token);
    /** @type {any} */ let Hls = null;
    try {
      Hls = (await import(new URL('/hls.min.mjs', ctx.edge).href)).default;
    } catch (e) {
      Hls = null;
    }
    if (closed) throw new TransportError('closed', { unreachable: true });
    if (Hls && Hls.isSupported()) {
      hls = new Hls({ startPosition: position });
      hls.on(Hls.Events.FRAG_LOADED, (/** @type {string} */ _ev, /** @type {any} */ d) => {
        counts.objects++;
        counts.bytes += d.frag.stats.loaded || 0;
      });
      await new Promise((resolve, reject) => {
        hls.on(Hls.Events.MANIFEST_PARSED, () => { opened = true; resolve(undefined); });
        hls.on(Hls.Events.ERROR, (/** @type {string} */ _ev, /** @type {any} */ d) => {
          if (!d.fatal || closed) return;
          if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
            hls.recoverMediaError();
            return;
          }
          if (!opened) {
            reject(new TransportError(`recording: ${d.details}`, { unreachable: true }));
            return;
          }
          ctx.handler.onClose(0, d.details);
        });
        hls.loadSource(url.href);
        hls.attachMedia(video);
      });
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      native = true;
      video.src = url.href;
      await new Promise((resolve, reject) => {
        video.addEventListener('loadedmetadata', () => { video.currentTime = position; resolve(undefined); }, { once: true });
        video.addEventListener('error', () => reject(new TransportError('native HLS failed to load the recording', { unreachable: true })), { once: true });
      });
      opened = true;
    } else {
      throw new TransportError('this browser has neither MSE for hls.js nor native HLS', { unreachable: true });
    }
    video.play().catch(() => {});
  }

  return {
    name: 'recording',
    ownsMedia: true,
    opened: withTimeout(open(), ctx.connectTimeout, () => new TransportError('recording: no playlist in time', { unreachable: true })),
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
      return NaN;
    },
    counts: () => ({ ...counts }),
    info: () => ({ player: hls ? 'hls.js' : native ? 'native' : '', position }),
  };
}
