// The MSE sink: one SourceBuffer per catalog track, fed objects in play
// order (order.js). It appends each epoch's init segment before the epoch's
// first object, keeps a new epoch's timeline continuous, bounds what waits
// for the SourceBuffer and reports when each object is appended, which is
// where glass-to-glass latency is measured.
import { FLAG_KEYFRAME } from './wire.js';

/** Appends that may wait for a SourceBuffer before the sink gives up and restarts at a keyframe. */
export const MAX_QUEUE = 600;

/**
 * @typedef {object} SinkHooks
 * @property {(capture: number, track: number) => void} onAppended capture wall-clock (µs) of an object now in the SourceBuffer
 * @property {(msg: string) => void} onError
 */

/**
 * @typedef {object} QueueItem
 * @property {Uint8Array<ArrayBuffer>} [data]
 * @property {number} [capture]  µs; set for objects, not for init segments
 * @property {number} [offset]   a timestampOffset to set before what follows
 * @property {number} [mediaTime] s, the object's start on the timeline
 */

/**
 * @typedef {object} SinkTrack
 * @property {string} mime
 * @property {number} timescale
 * @property {SourceBuffer|null} sb
 * @property {QueueItem[]} queue
 * @property {QueueItem|null} inflight
 * @property {number} epoch      of the last object queued, -1 before
 * @property {number} offset     s added to decode times (timestampOffset)
 * @property {number} lastTime   s, start of the last object queued, offset applied; NaN before
 * @property {number} step       s between the last two objects queued (a frame, for a new epoch's offset)
 * @property {boolean} needKey   drop objects until a keyframe (after an overflow)
 */

export class MseSink {
  /**
   * @param {HTMLVideoElement} video
   * @param {SinkHooks} hooks
   */
  constructor(video, hooks) {
    this.video = video;
    this.hooks = hooks;
    /** @type {MediaSource|null} */ this.ms = null;
    /** @type {SinkTrack[]} */ this.tracks = [];
    /** @type {Map<number, Uint8Array<ArrayBuffer>[]>} init segments by epoch */ this.inits = new Map();
    /** @type {{time: number, capture: number}[]} capture wall-clock by timeline position, first track */
    this.timeline = [];
    this.overflows = 0;
    /** @type {string|null} */ this.objectURL = null;
  }

  /**
   * Takes a catalog and its init segments (one per track). The
   * SourceBuffers are kept when the tracks' types did not change.
   * @param {{epoch: number, tracks: {mimeType: string, timescale: number}[]}} catalog
   * @param {Uint8Array<ArrayBuffer>[]} inits
   */
  setCatalog(catalog, inits) {
    this.inits.set(catalog.epoch, inits);
    if (this.inits.size > 8) this.inits.delete(/** @type {number} */ (this.inits.keys().next().value));
    const mimes = catalog.tracks.map((t) => t.mimeType);
    const same = this.ms && this.tracks.length === mimes.length && this.tracks.every((t, i) => t.mime === mimes[i]);
    if (same) {
      catalog.tracks.forEach((t, i) => { this.tracks[i].timescale = t.timescale || 1; });
      return;
    }
    for (const m of mimes) {
      if (!window.MediaSource || !MediaSource.isTypeSupported(m)) {
        this.hooks.onError(`this browser cannot play ${m}`);
        return;
      }
    }
    this.detach();
    this.tracks = catalog.tracks.map((t) => ({
      mime: t.mimeType, timescale: t.timescale || 1, sb: null, queue: [], inflight: null,
      epoch: -1, offset: 0, lastTime: NaN, step: 0.04, needKey: false,
    }));
    this.timeline = [];
    const ms = new MediaSource();
    this.ms = ms;
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms) return;
      for (const t of this.tracks) {
        const sb = ms.addSourceBuffer(t.mime);
        sb.mode = 'segments';
        sb.addEventListener('updateend', () => this.updated(t));
        sb.addEventListener('error', () => this.hooks.onError('SourceBuffer error'));
        t.sb = sb;
      }
      for (const t of this.tracks) this.pump(t);
    }, { once: true });
    if (this.objectURL) URL.revokeObjectURL(this.objectURL);
    this.objectURL = URL.createObjectURL(ms);
    this.video.src = this.objectURL;
  }

  /** Lets go of the MediaSource. */
  detach() {
    this.ms = null;
    this.tracks = [];
  }

  /**
   * Queues one object for its track's SourceBuffer.
   * @param {import('./order.js').OrderedObject} o
   */
  append(o) {
    const f = o.frame;
    const t = this.tracks[f.track];
    if (!t) return;
    if (t.needKey) {
      if (!(f.flags & FLAG_KEYFRAME) || f.index !== 0) return;
      t.needKey = false;
    }
    if (t.queue.length >= MAX_QUEUE) {
      // The decoder does not keep up: drop what waits and restart at the
      // next keyframe.
      t.queue = [];
      t.needKey = true;
      this.overflows++;
      return;
    }
    let time = f.decodeTime / t.timescale + t.offset;
    if (t.epoch !== o.epoch) {
      const inits = this.inits.get(o.epoch);
      if (!inits || !inits[f.track]) {
        // Its catalog has not come: nothing can decode it, nor what
        // follows until the next keyframe.
        t.needKey = true;
        return;
      }
      // A new epoch may restart its decode times: keep the timeline going
      // from where the previous epoch stopped.
      if (t.epoch >= 0 && !isNaN(t.lastTime) && Math.abs(time - t.lastTime) > 2) {
        t.offset = t.lastTime + t.step - f.decodeTime / t.timescale;
        t.queue.push({ offset: t.offset });
        time = f.decodeTime / t.timescale + t.offset;
      }
      t.queue.push({ data: inits[f.track] });
      t.epoch = o.epoch;
    }
    if (!isNaN(t.lastTime) && time > t.lastTime && time - t.lastTime < 0.5) t.step = time - t.lastTime;
    t.lastTime = time;
    t.queue.push({ data: f.payload, capture: f.capture, mediaTime: time });
    this.pump(t);
  }

  /** @param {SinkTrack} t */
  updated(t) {
    const it = t.inflight;
    t.inflight = null;
    if (it && it.capture !== undefined) {
      this.hooks.onAppended(it.capture, this.tracks.indexOf(t));
      if (t === this.tracks[0] && it.mediaTime !== undefined) {
        this.timeline.push({ time: it.mediaTime, capture: it.capture });
        if (this.timeline.length > 900) this.timeline.splice(0, 300);
      }
    }
    this.pump(t);
  }

  /** @param {SinkTrack} t */
  pump(t) {
    const sb = t.sb;
    while (sb && !sb.updating && t.queue.length > 0) {
      const it = /** @type {QueueItem} */ (t.queue[0]);
      if (it.offset !== undefined) {
        sb.timestampOffset = it.offset;
        t.queue.shift();
        continue;
      }
      try {
        sb.appendBuffer(/** @type {Uint8Array<ArrayBuffer>} */ (it.data));
        t.queue.shift();
        t.inflight = it;
      } catch (e) {
        if (e instanceof DOMException && e.name === 'QuotaExceededError') {
          this.trim(2); // retried at the next updateend or append
        } else {
          t.queue = [];
          t.needKey = true;
          this.hooks.onError(String(e));
        }
      }
      return;
    }
  }

  /**
   * Removes media more than keep seconds behind the playhead.
   * @param {number} keep
   */
  trim(keep) {
    const now = this.video.currentTime;
    for (const t of this.tracks) {
      const sb = t.sb;
      if (!sb || sb.updating || sb.buffered.length === 0) continue;
      const start = sb.buffered.start(0);
      if (now - start > keep + 5) {
        try {
          sb.remove(start, now - keep);
        } catch {
          // the MediaSource ended or the range moved: next time
        }
      }
    }
  }

  /**
   * The capture wall-clock (µs) of what plays at time, or NaN.
   * @param {number} time
   */
  captureAt(time) {
    const tl = this.timeline;
    for (let i = tl.length - 1; i >= 0; i--) {
      const e = tl[i];
      if (e.time <= time) return e.capture + (time - e.time) * 1e6;
    }
    return NaN;
  }

  /** Objects waiting for a SourceBuffer. */
  get queued() {
    let n = 0;
    for (const t of this.tracks) n += t.queue.length;
    return n;
  }
}
