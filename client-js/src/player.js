// quiccast player: receives a broadcast from an edge and plays it through
// Media Source Extensions, staying near the live edge. Over WebSocket it
// appends the edge's objects itself; over LL-HLS it hands the edge's
// playlist to hls.js (served by the edge as /hls.min.mjs) or, where the
// browser plays HLS itself (Safari), to the video element.
import { parseFrame, KIND_INIT, KIND_OBJECT } from './wire.js';

/**
 * @typedef {object} PlayerOptions
 * @property {string} broadcast        broadcast name
 * @property {string} [base]           edge base URL, default the page's origin
 * @property {string} [token]          play token, sent as ?token=
 * @property {number} [targetLatency]  seconds behind the newest frame to aim for, default 0.5
 * @property {boolean} [overlay]       show live stats over the video
 * @property {'websocket'|'hls'} [transport] "websocket" (default) or "hls" (LL-HLS)
 * @property {string} [hlsScript]      where hls.js is imported from, default "/hls.min.mjs"
 */

/**
 * @typedef {object} PlayerStats
 * @property {string} transport     "websocket" or "hls" (with "native" when the browser plays HLS itself)
 * @property {string} state         "connecting" | "playing" | "waiting" | "ended" | "stopped"
 * @property {number} latencyMs     capture wall-clock of the shown frame to now, NaN before the first frame
 * @property {number} bufferMs      media buffered ahead of the playhead
 * @property {number} objects       objects (LL-HLS: parts or segments) received
 * @property {number} bytes         payload bytes received
 * @property {number} skippedGroups groups the edge skipped because this viewer fell behind
 * @property {number} stalls        times playback waited for data
 * @property {number} reconnects
 * @property {number} decodedFrames
 * @property {number} droppedFrames
 */

const MAX_QUEUE = 600; // appends waiting for the SourceBuffer

export class Player extends EventTarget {
  /**
   * @param {HTMLVideoElement} video
   * @param {PlayerOptions} opts
   */
  constructor(video, opts) {
    super();
    this.video = video;
    /** @type {PlayerOptions & {targetLatency: number}} */
    this.opts = { targetLatency: 0.5, overlay: false, broadcast: opts.broadcast, transport: 'websocket' };
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) /** @type {any} */ (this.opts)[k] = v;
    /** @type {WebSocket|null} */ this.ws = null;
    /** @type {MediaSource|null} */ this.ms = null;
    /** @type {SourceBuffer|null} */ this.sb = null;
    /** @type {Uint8Array<ArrayBuffer>[]} */ this.queue = [];
    /** @type {any} */ this.catalog = null;
    this.stopped = true;
    this.backoff = 500;
    this.timescale = 1;
    this.lastCapture = 0; // µs, of the newest appended object
    this.lastMediaTime = 0; // s, of the newest appended object
    this.waitKey = true;
    /** @type {PlayerStats} */
    this._stats = {
      transport: 'websocket', state: 'stopped', latencyMs: NaN, bufferMs: 0, objects: 0, bytes: 0,
      skippedGroups: 0, stalls: 0, reconnects: 0, decodedFrames: 0, droppedFrames: 0,
    };
    /** @type {HTMLElement|null} */ this.overlayEl = null;
    /** @type {any} */ this.timer = null;
    /** @type {any} */ this.hls = null; // the hls.js instance in LL-HLS mode
    this.nativeHLS = false;
    this.video.addEventListener('waiting', () => { if (this._stats.state === 'playing') this._stats.stalls++; });
  }

  /** Connects and starts playing. */
  start() {
    this.stopped = false;
    if (this.opts.overlay && !this.overlayEl) this.makeOverlay();
    this.timer = setInterval(() => this.tick(), 250);
    if (this.opts.transport === 'hls') {
      this._stats.transport = 'hls';
      this.startHLS();
    } else {
      this.connect();
    }
  }

  /** Disconnects and stops playback. */
  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.ws) this.ws.close(1000);
    if (this.hls) this.hls.destroy();
    this.hls = null;
    if (this.nativeHLS) {
      this.video.removeAttribute('src');
      this.video.load();
    }
    this.setState('stopped');
  }

  /** @returns {PlayerStats} a snapshot of the live statistics */
  get stats() {
    const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    if (q) {
      this._stats.decodedFrames = q.totalVideoFrames;
      this._stats.droppedFrames = q.droppedVideoFrames;
    }
    return { ...this._stats };
  }

  /** @param {string} s */
  setState(s) {
    if (this._stats.state === s) return;
    this._stats.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  url() {
    const base = new URL(this.opts.base || location.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    base.pathname = '/ws/' + this.opts.broadcast;
    base.search = this.opts.token ? '?token=' + encodeURIComponent(this.opts.token) : '';
    return base.toString();
  }

  /** @returns {string} the LL-HLS playlist URL of the broadcast */
  hlsURL() {
    const base = new URL(this.opts.base || location.href);
    base.pathname = '/hls/' + this.opts.broadcast + '/index.m3u8';
    base.search = this.opts.token ? '?token=' + encodeURIComponent(this.opts.token) : '';
    return base.toString();
  }

  /**
   * Plays the broadcast over LL-HLS: hls.js in low-latency mode where MSE
   * exists, else the browser's own HLS (Safari on iOS).
   */
  async startHLS() {
    if (this.stopped) return;
    this.setState('connecting');
    const v = this.video;
    /** @type {any} */
    let Hls = null;
    try {
      const url = this.opts.hlsScript || '/hls.min.mjs';
      Hls = (await import(url)).default;
    } catch (e) {
      Hls = null; // no hls.js: try the browser's own HLS
    }
    if (this.stopped) return;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls({
        lowLatencyMode: true,
        backBufferLength: 10,
        maxLiveSyncPlaybackRate: 1.2, // catch up with the live edge by playing faster
        liveSyncOnStallIncrease: 0.2,
      });
      this.hls = hls;
      hls.on(Hls.Events.FRAG_LOADED, (/** @type {string} */ _ev, /** @type {any} */ d) => {
        this.backoff = 500;
        this._stats.objects++;
        this._stats.bytes += (d.part ? d.part.stats.loaded : d.frag.stats.loaded) || 0;
      });
      hls.on(Hls.Events.ERROR, (/** @type {string} */ _ev, /** @type {any} */ d) => {
        if (!d.fatal || this.hls !== hls) return;
        if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
          return;
        }
        // A network error (no such broadcast yet, the edge went away):
        // start again with backoff.
        this.dispatchEvent(new CustomEvent('close', { detail: { code: d.response ? d.response.code : 0, reason: d.details } }));
        hls.destroy();
        this.hls = null;
        this._stats.reconnects++;
        const wait = this.backoff;
        this.backoff = Math.min(this.backoff * 2, 5000);
        setTimeout(() => this.startHLS(), wait);
      });
      hls.loadSource(this.hlsURL());
      hls.attachMedia(v);
    } else if (v.canPlayType('application/vnd.apple.mpegurl')) {
      this.nativeHLS = true;
      this._stats.transport = 'hls native';
      v.src = this.hlsURL();
    } else {
      this.dispatchEvent(new CustomEvent('error', { detail: 'this browser has neither MSE for hls.js nor native HLS' }));
      return;
    }
    v.play().catch(() => {});
  }

  /** @returns {number} the wall-clock (ms) of the frame on screen, from EXT-X-PROGRAM-DATE-TIME; NaN if unknown */
  hlsPlayingDate() {
    if (this.hls && this.hls.playingDate) return this.hls.playingDate.getTime();
    const v = /** @type {any} */ (this.video);
    if (this.nativeHLS && typeof v.getStartDate === 'function') {
      const d = v.getStartDate().getTime();
      if (!isNaN(d)) return d + v.currentTime * 1000;
    }
    return NaN;
  }

  connect() {
    if (this.stopped) return;
    this.setState('connecting');
    const ws = new WebSocket(this.url());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.onControl(JSON.parse(ev.data));
      else this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.dispatchEvent(new CustomEvent('close', { detail: { code: ev.code, reason: ev.reason } }));
      if (this.stopped) return;
      // 4004: no such broadcast yet; 1001: edge draining. Retry with backoff.
      const wait = ev.code === 1001 ? 0 : this.backoff;
      this.backoff = Math.min(this.backoff * 2, 5000);
      this._stats.reconnects++;
      setTimeout(() => this.connect(), wait);
    };
  }

  /** @param {any} m */
  onControl(m) {
    switch (m.type) {
      case 'catalog':
        this.backoff = 500;
        this.setCatalog(m.catalog);
        break;
      case 'skip':
        this._stats.skippedGroups += Math.max(1, m.to - m.from);
        this.dispatchEvent(new CustomEvent('skip', { detail: m }));
        this.waitKey = true;
        break;
      case 'ended':
        this.setState('ended');
        this.dispatchEvent(new CustomEvent('ended'));
        break;
      case 'goaway':
        this.dispatchEvent(new CustomEvent('goaway', { detail: m }));
        break;
    }
  }

  /** @param {any} cat */
  setCatalog(cat) {
    const t = cat.tracks[0];
    const same = this.catalog && this.catalog.tracks[0].mimeType === t.mimeType && this.sb;
    this.catalog = cat;
    this.timescale = t.timescale;
    this.dispatchEvent(new CustomEvent('catalog', { detail: cat }));
    if (same) return; // the new init segment follows; MSE takes it in place
    this.resetMedia(t.mimeType);
  }

  /** @param {string} mime */
  resetMedia(mime) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      this.dispatchEvent(new CustomEvent('error', { detail: `this browser cannot play ${mime}` }));
      return;
    }
    this.queue = [];
    this.sb = null;
    const ms = new MediaSource();
    this.ms = ms;
    ms.addEventListener('sourceopen', () => {
      if (this.ms !== ms) return;
      const sb = ms.addSourceBuffer(mime);
      sb.mode = 'segments';
      sb.addEventListener('updateend', () => this.pump());
      sb.addEventListener('error', () => this.dispatchEvent(new CustomEvent('error', { detail: 'SourceBuffer error' })));
      this.sb = sb;
      this.pump();
    }, { once: true });
    this.video.src = URL.createObjectURL(ms);
  }

  /** @param {ArrayBuffer} data */
  onFrame(data) {
    let f;
    try {
      f = parseFrame(data);
    } catch (e) {
      this.dispatchEvent(new CustomEvent('error', { detail: String(e) }));
      return;
    }
    if (f.kind === KIND_INIT) {
      this.enqueue(f.payload);
      this.waitKey = true;
      return;
    }
    if (f.kind !== KIND_OBJECT || f.payload.byteLength === 0) return; // end-of-group marker
    if (this.waitKey) {
      if (f.index !== 0) return;
      this.waitKey = false;
    }
    this._stats.objects++;
    this._stats.bytes += f.payload.byteLength;
    this.lastCapture = f.capture;
    this.lastMediaTime = f.decodeTime / this.timescale;
    this.enqueue(f.payload);
  }

  /** @param {Uint8Array<ArrayBuffer>} b */
  enqueue(b) {
    if (this.queue.length >= MAX_QUEUE) {
      // The decoder cannot keep up: drop and restart at a keyframe.
      this.queue = [];
      this.waitKey = true;
      return;
    }
    this.queue.push(b);
    this.pump();
  }

  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.queue.length === 0) return;
    const next = /** @type {Uint8Array<ArrayBuffer>} */ (this.queue.shift());
    try {
      sb.appendBuffer(next);
    } catch (e) {
      if (e instanceof DOMException && e.name === 'QuotaExceededError') {
        this.trim(true);
        this.queue.unshift(next);
      } else {
        this.dispatchEvent(new CustomEvent('error', { detail: String(e) }));
      }
    }
  }

  /** Drops media far behind the playhead. @param {boolean} [hard] */
  trim(hard) {
    const sb = this.sb;
    if (!sb || sb.updating || sb.buffered.length === 0) return;
    const keep = hard ? 2 : 20;
    const start = sb.buffered.start(0);
    if (this.video.currentTime - start > keep + 10) sb.remove(start, this.video.currentTime - keep);
  }

  /** Keeps playback near the live edge; runs every 250 ms. */
  tick() {
    const v = this.video;
    const b = v.buffered;
    if (this.opts.transport === 'hls') {
      // hls.js (or the browser) keeps to the live edge; only measure.
      if (b.length > 0) this._stats.bufferMs = Math.round((b.end(b.length - 1) - v.currentTime) * 1000);
      if (!v.paused && v.readyState >= 3) this.setState('playing');
      else if (this._stats.state === 'playing') this.setState('waiting');
      const at = this.hlsPlayingDate();
      if (!isNaN(at)) this._stats.latencyMs = Math.round(Date.now() - at);
    } else if (b.length > 0) {
      const end = b.end(b.length - 1);
      const target = this.opts.targetLatency;
      if (v.currentTime < b.start(0) || end - v.currentTime > target + 1.5) {
        v.currentTime = Math.max(b.start(b.length - 1), end - target); // jump to the live edge
      }
      const behind = end - v.currentTime;
      v.playbackRate = behind > target + 0.2 ? 1.1 : behind < target * 0.5 ? 0.97 : 1;
      if (v.paused) v.play().catch(() => {});
      this._stats.bufferMs = Math.round(behind * 1000);
      if (!v.paused && v.readyState >= 3) this.setState('playing');
      else if (this._stats.state === 'playing') this.setState('waiting');
      if (this.lastCapture > 0) {
        this._stats.latencyMs = Math.round(Date.now() - this.lastCapture / 1000 + (this.lastMediaTime - v.currentTime) * 1000);
      }
      this.trim(false);
    }
    const s = this.stats;
    this.dispatchEvent(new CustomEvent('stats', { detail: s }));
    if (this.overlayEl) {
      this.overlayEl.textContent = `${s.transport} · ${s.state} · latency ${isNaN(s.latencyMs) ? '–' : s.latencyMs + ' ms'}` +
        ` · buffer ${s.bufferMs} ms · frames ${s.decodedFrames} (${s.droppedFrames} dropped) · skips ${s.skippedGroups} · stalls ${s.stalls}`;
    }
  }

  makeOverlay() {
    const el = document.createElement('div');
    el.className = 'quiccast-overlay';
    el.style.cssText = 'position:absolute;left:8px;bottom:8px;padding:4px 8px;background:rgba(0,0,0,.6);color:#fff;font:12px/1.4 monospace;border-radius:4px;pointer-events:none';
    const parent = this.video.parentElement;
    if (parent) {
      if (getComputedStyle(parent).position === 'static') parent.style.position = 'relative';
      parent.appendChild(el);
    }
    this.overlayEl = el;
  }
}
