// quiccast player: receives a broadcast from an edge over WebTransport or
// WebSocket and plays it through Media Source Extensions, staying near the
// live edge; or hands the edge's LL-HLS playlist to hls.js (transport
// 'hls'). The policy lives here: which transport (falling back from
// WebTransport to WebSocket), reconnecting and failing over across edges,
// GOAWAY, live-edge control, stats and the overlay. The transports
// (transport-*.js) are picked by name from a registry, so more can be
// plugged in.
import { GroupOrderer } from './order.js';
import { MseSink } from './mse.js';
import { registerTransport, transportFactory, TransportError, withTimeout } from './transport.js';
import { openWebTransport } from './transport-wt.js';
import { openWebSocket } from './transport-ws.js';
import { openHLS } from './transport-hls.js';
import { openRecording } from './transport-rec.js';

export { registerTransport, TransportError } from './transport.js';

registerTransport('webtransport', openWebTransport);
registerTransport('websocket', openWebSocket);
registerTransport('hls', openHLS);
registerTransport('recording', openRecording);

/**
 * @typedef {object} PlayerOptions
 * @property {string} broadcast          broadcast name
 * @property {string} [base]             edge base URL, default the page's origin
 * @property {string[]} [edges]          edge base URLs to fail over across, in order (default [base])
 * @property {string} [router]           a router URL (any node's /edge): the edges come from it, best first, asked again when the player has tried them all
 * @property {string} [region]           the viewer's region, for the router (else a geo-aware load balancer's X-Quiccast-Region header decides)
 * @property {string} [token]            play token, sent as ?token= (and in the relay HELLO)
 * @property {() => Promise<string>} [refreshToken] called when the token expired (close 4401); the player reconnects with the token it returns (else the page answers the tokenexpired event with setToken)
 * @property {string} [transport]        'auto' (default: WebTransport, else WebSocket), 'webtransport', 'websocket', 'hls' (LL-HLS through hls.js or native HLS), or a registered name
 * @property {number} [targetLatency]    seconds behind the newest received frame to play at (the buffer kept), default 0.5
 * @property {number} [jumpThreshold]    seconds beyond targetLatency after which playback jumps instead of speeding up, default 4 × targetLatency within 0.5..1.5 (1.5 at the default target)
 * @property {number} [connectTimeout]   ms WebTransport may take to connect before falling back to WebSocket, default 1500
 * @property {number} [webtransportPort] UDP port to reach WebTransport at, instead of the one the edge advertises
 * @property {boolean} [overlay]         show live stats over the video
 * @property {number} [start]            play the broadcast's recording from this wall-clock time (ms since the Unix epoch) instead of live; goLive() returns to live
 * @property {boolean} [preview]         an operator's preview (the dashboard's): over LL-HLS the edge does not count it as a viewer
 */

/**
 * @typedef {object} PlayerStats
 * @property {string} transport     "webtransport", "websocket", … ("" before connecting)
 * @property {string} edge          the edge in use
 * @property {string} state         "connecting" | "offline" (no such broadcast yet: retrying) | "playing" | "waiting" (stalled) |
 *                                  "ended" (retrying) | "refused" (token; stopped) | "notfound" (invalid name; stopped) |
 *                                  "tokenexpired" (waiting for setToken) | "stopped" | "error"
 * @property {number} latencyMs     capture wall-clock of the frame on screen to now; NaN before the first frame
 * @property {number} g2gMs         capture to SourceBuffer append done, of the newest object
 * @property {number} g2gP50Ms      median of g2gMs over the last 300 objects
 * @property {number} g2gP95Ms      95th percentile of the same
 * @property {number} bufferMs      media buffered ahead of the playhead
 * @property {number} objects       objects appended
 * @property {number} bytes         payload bytes appended
 * @property {number} skippedGroups groups left out: skipped by the edge, reset, incomplete or too late
 * @property {number} lateObjects   objects that came after their group was passed
 * @property {number} stalls        times playback waited for data
 * @property {number} reconnects    connections after the first
 * @property {number} fallbacks     times WebTransport failed and WebSocket was used
 * @property {number} connectMs     time the current connection took to open
 * @property {number} decodedFrames
 * @property {number} droppedFrames
 * @property {string} lastError
 */

const G2G_WINDOW = 300;
const STALL_MARGIN = 0.05; // s added to the target at each stall
const MAX_MARGIN = 0.2;
const MARGIN_DECAY = 0.02; // s a second
const FALLBACK_MEMORY_MS = 5 * 60 * 1000;

/**
 * @typedef {object} SessionEnd
 * @property {'goaway'|'closed'|'refused'|'unreachable'|'stopped'|'live'} kind
 * @property {number} [code]
 * @property {string} [reason]
 * @property {string} [url]
 */

/**
 * Plays a broadcast into a video element. Events (CustomEvent detail):
 * connected {transport, edge, connectMs}, fallback {from, to, reason},
 * catalog, state, stats (PlayerStats, every 250 ms), appended {g2gMs,
 * capture} (each object in a SourceBuffer), skip, ended, goaway {url},
 * close {code, reason}, error (a message), tokenexpired {code, reason,
 * setToken(token)} (the edge closed with 4401: the page fetches a fresh token
 * and calls setToken, and the player reconnects with it).
 */
export class Player extends EventTarget {
  /**
   * @param {HTMLVideoElement} video
   * @param {PlayerOptions} opts
   */
  constructor(video, opts) {
    super();
    this.video = video;
    /** @type {Required<Pick<PlayerOptions, 'targetLatency'|'jumpThreshold'|'connectTimeout'|'transport'>> & PlayerOptions} */
    this.opts = { targetLatency: 0.5, jumpThreshold: 1.5, connectTimeout: 1500, transport: 'auto', overlay: false, broadcast: opts.broadcast };
    for (const [k, v] of Object.entries(opts)) if (v !== undefined && v !== null && !Number.isNaN(v)) /** @type {any} */ (this.opts)[k] = v;
    // A small target is a choice of latency over smoothness: after a stall
    // that piled up a second of media, jump rather than play fast for 5 s.
    if (!(typeof opts.jumpThreshold === 'number' && opts.jumpThreshold > 0)) {
      this.opts.jumpThreshold = Math.min(1.5, Math.max(0.5, 4 * this.opts.targetLatency));
    }
    /** Whether targetLatency was given (LL-HLS then uses it instead of the playlist's PART-HOLD-BACK). */
    this.latencySet = typeof opts.targetLatency === 'number' && opts.targetLatency > 0;
    const list = this.opts.edges && this.opts.edges.length > 0 ? this.opts.edges : [this.opts.base || location.origin];
    /** @type {URL[]} */ this.edges = list.map((e) => new URL(e, location.href));
    this.edgeIndex = 0;
    this.stopped = true;
    this.sessions = 0;
    /** @type {import('./transport.js').Transport|null} */ this.current = null;
    /** @type {import('./transport.js').Transport|null} */ this.opening = null;
    /** @type {((e: SessionEnd) => void)|null} */ this.endSession = null;
    /** @type {Map<string, number>} edge → until when WebTransport is skipped there */ this.wtBroken = new Map();
    /** @type {(() => void)|null} resolves the wait for a fresh token */ this.tokenWaiter = null;
    this.sink = new MseSink(video, {
      onAppended: (capture) => this.appended(capture),
      onError: (msg) => this.fail(msg),
    });
    /** @type {GroupOrderer[]} */ this.orderers = [];
    this.connectedAt = 0; // when the current connection opened (ms)
    this.retiredSkips = 0; // counters of orderers replaced
    this.retiredLate = 0;
    /** @type {number[]} */ this.g2g = [];
    this.lastTime = NaN; // the video's currentTime at the end of the last tick
    /** @type {PlayerStats} */
    this._stats = {
      transport: '', edge: '', state: 'stopped', latencyMs: NaN, g2gMs: NaN, g2gP50Ms: NaN, g2gP95Ms: NaN,
      bufferMs: 0, objects: 0, bytes: 0, skippedGroups: 0, lateObjects: 0, stalls: 0, reconnects: 0, fallbacks: 0,
      connectMs: NaN, decodedFrames: 0, droppedFrames: 0, lastError: '',
    };
    /** @type {HTMLElement|null} */ this.overlayEl = null;
    /** @type {any} */ this.timer = null;
    // Each stall after the first seconds of a connection adds
    // STALL_MARGIN to the target, up to MAX_MARGIN; it wears off at
    // MARGIN_DECAY a second. A machine too busy to keep a 0.1 s buffer
    // fed gets a little more instead of stalling again.
    this.margin = 0;
    this.video.addEventListener('waiting', () => {
      if (this._stats.state !== 'playing') return;
      this._stats.stalls++;
      if (Date.now() - this.connectedAt > 3000) this.margin = Math.min(MAX_MARGIN, this.margin + STALL_MARGIN);
    });
  }

  /** Connects and starts playing. */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    if (this.opts.overlay && !this.overlayEl) this.makeOverlay();
    this.timer = setInterval(() => this.tick(), 250);
    this.run();
  }

  /** Leaves a recording (the start option) for the live broadcast. */
  goLive() {
    if (this.opts.start === undefined) return;
    this.opts.start = undefined;
    if (this.endSession) this.endSession({ kind: 'live' });
  }

  /** Disconnects and stops playback. */
  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.tokenWaiter) this.tokenWaiter();
    if (this.endSession) this.endSession({ kind: 'stopped' });
    this.setState('stopped');
  }

  /** @returns {PlayerStats} a snapshot of the live statistics */
  get stats() {
    const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    if (q) {
      this._stats.decodedFrames = q.totalVideoFrames;
      this._stats.droppedFrames = q.droppedVideoFrames;
    }
    let skipped = 0;
    let late = 0;
    for (const o of this.orderers) {
      skipped += o.skippedGroups;
      late += o.lateObjects;
    }
    this._stats.skippedGroups = skipped + this.retiredSkips;
    this._stats.lateObjects = late + this.retiredLate;
    return { ...this._stats };
  }

  /** Whether the broadcast is known not to be live: ended or offline. */
  waitingForBroadcast() {
    return this._stats.state === 'ended' || this._stats.state === 'offline';
  }

  /**
   * Playing or stalled, from what the video does: currentTime moving
   * means playing, whatever readyState says (at a low target latency it
   * often sits at HAVE_CURRENT_DATA while playing).
   * @param {boolean} moved currentTime advanced since the last tick, seeks aside
   */
  updatePlaying(moved) {
    const v = this.video;
    const st = this._stats.state;
    if (st === 'ended' || st === 'error' || st === 'stopped' || st === 'refused' || st === 'notfound' || st === 'tokenexpired') return;
    if (!v.paused && (moved || v.readyState >= 3)) this.setState('playing');
    else if (st === 'playing') this.setState('waiting');
  }

  /** @param {string} s */
  setState(s) {
    if (this._stats.state === s) return;
    this._stats.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  /**
   * @param {string} type
   * @param {any} [detail]
   */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {string} msg */
  fail(msg) {
    this._stats.lastError = msg;
    this.emit('error', msg);
  }

  /** Connects, plays until the connection ends, and decides where to go next, until stopped. */
  /**
   * Gives the player a fresh play token: the next connection uses it, and
   * a player waiting after tokenexpired reconnects at once.
   * @param {string} token
   */
  setToken(token) {
    this.opts.token = token;
    const w = this.tokenWaiter;
    this.tokenWaiter = null;
    if (w) w();
  }

  /**
   * The edge closed with 4401 (token expired): ask the page for a fresh
   * token (the tokenexpired event, or opts.refreshToken) and wait for it.
   * @param {SessionEnd} end
   */
  async waitForToken(end) {
    this.setState('tokenexpired');
    const fresh = new Promise((resolve) => { this.tokenWaiter = () => resolve(undefined); });
    this.emit('tokenexpired', { code: end.code, reason: end.reason, setToken: (/** @type {string} */ t) => this.setToken(t) });
    if (this.opts.refreshToken) {
      this.opts.refreshToken().then((t) => this.setToken(t), (e) => this.fail(`refreshToken: ${e && e.message ? e.message : e}`));
    }
    await fresh;
  }

  /**
   * Asks the router (opts.router) for the edges to use, best first; on
   * failure keeps the edges it has.
   */
  async route() {
    if (!this.opts.router) return;
    const u = new URL(this.opts.router, location.href);
    u.searchParams.set('broadcast', this.opts.broadcast);
    if (this.opts.region) u.searchParams.set('region', this.opts.region);
    try {
      const r = await withTimeout(fetch(u, { cache: 'no-store' }), 5000, () => new Error('no answer in 5 s'));
      const body = await r.json();
      if (!r.ok) throw new Error(`${r.status}: ${body.error || ''}`);
      /** @type {{url: string}[]} */ const edges = body.edges || [];
      if (edges.length === 0) throw new Error('no edges');
      this.edges = edges.map((e) => new URL(e.url, u));
      this.edgeIndex = 0;
      this.emit('routed', { edges: this.edges.map((e) => e.href) });
    } catch (e) {
      this.fail(`router ${u.origin}${u.pathname}: ${e instanceof Error ? e.message : e}`);
    }
  }

  async run() {
    let backoff = 250;
    let routed = false;
    while (!this.stopped) {
      // With a router: ask it first, and again once every edge it gave
      // was tried.
      if (this.opts.router && (!routed || this.edgeIndex >= this.edges.length)) {
        routed = true;
        await this.route();
        if (this.stopped) return;
      }
      const edge = /** @type {URL} */ (this.edges[this.edgeIndex % this.edges.length]);
      const began = Date.now();
      const end = await this.session(edge);
      if (this.stopped) return;
      const lived = Date.now() - began;
      if (lived > 5000) backoff = 250;
      let wait = backoff;
      if ((end.kind === 'closed' || end.kind === 'refused') && end.code === 4410) {
        // An operator removed this viewer (the cluster API's kick):
        // coming straight back would undo it.
        this.stopped = true;
        clearInterval(this.timer);
        this.setState('refused');
        this.fail(`removed by an operator (${end.code}): ${end.reason}`);
        return;
      }
      if ((end.kind === 'refused' || end.kind === 'closed') && end.code === 4401) {
        // The token expired: not a reason to give up, nor to retry with
        // the same token.
        await this.waitForToken(end);
        if (this.stopped) return;
        backoff = 250;
        this.setState('connecting');
        continue;
      }
      switch (end.kind) {
        case 'goaway':
          // The edge is draining: go elsewhere at once.
          wait = 0;
          if (end.url) this.edges.splice(this.edgeIndex + 1, 0, new URL(end.url, edge));
          this.edgeIndex++;
          break;
        case 'closed':
          if (end.code === 1001) {
            wait = 0;
            this.edgeIndex++;
          }
          break;
        case 'refused':
          if (end.code === 4001 || end.code === 4003 || end.code === 4000) {
            // A token problem or a bad name does not fix itself.
            this.stopped = true;
            clearInterval(this.timer);
            this.setState(end.code === 4000 ? 'notfound' : 'refused');
            this.fail(`refused (${end.code}): ${end.reason}`);
            return;
          }
          if (end.code === 4004) {
            // Not live (yet, or any more): look again soon, so it
            // starts by itself when it goes live.
            if (this._stats.state !== 'ended') this.setState('offline');
            backoff = Math.min(backoff, 1000);
          } else {
            this.edgeIndex++;
          }
          break;
        case 'unreachable':
          this.edgeIndex++;
          break;
      }
      backoff = Math.min(backoff * 2, 5000);
      if (!this.waitingForBroadcast()) this.setState('connecting');
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  /**
   * Which transports to try at edge, in order.
   * @param {URL} edge
   */
  transportsFor(edge) {
    if (this.opts.start !== undefined) return ['recording'];
    const t = this.opts.transport;
    if (t !== 'auto') return [t];
    const until = this.wtBroken.get(edge.href) || 0;
    return Date.now() < until ? ['websocket'] : ['webtransport', 'websocket'];
  }

  /**
   * One connection to edge, from the first transport that opens until it
   * ends.
   * @param {URL} edge
   * @returns {Promise<SessionEnd>}
   */
  async session(edge) {
    if (!this.waitingForBroadcast()) this.setState('connecting');
    const names = this.transportsFor(edge);
    /** @type {TransportError|null} */ let last = null;
    for (const name of names) {
      const factory = transportFactory(name);
      if (!factory) {
        this.fail(`no transport named ${name}`);
        return { kind: 'refused', code: 0, reason: `no transport ${name}` };
      }
      const t0 = performance.now();
      /** @type {import('./transport.js').Transport|null} */ let t = null;
      /** @type {Promise<SessionEnd>} */
      const ended = new Promise((resolve) => { this.endSession = resolve; });
      t = factory({
        edge, broadcast: this.opts.broadcast, token: this.opts.token, video: this.video,
        connectTimeout: name === 'webtransport' ? this.opts.connectTimeout : 10000,
        webtransportPort: this.opts.webtransportPort,
        start: this.opts.start,
        preview: this.opts.preview,
        targetLatency: this.latencySet ? this.opts.targetLatency : undefined,
        handler: this.handler(() => this.current === t || this.opening === t),
      });
      this.opening = t;
      // Whichever of the two loses the race settles later, unobserved.
      t.opened.catch(() => {});
      const endedEarly = ended.then((e) => { throw e; });
      endedEarly.catch(() => {});
      try {
        await Promise.race([t.opened, endedEarly]);
      } catch (e) {
        this.opening = null;
        t.close();
        if (!(e instanceof TransportError)) return /** @type {SessionEnd} */ (e); // stopped while connecting
        last = e;
        this._stats.lastError = `${name}: ${e.message}`;
        if (!e.unreachable) return { kind: 'refused', code: e.code, reason: e.message };
        continue;
      }
      this.opening = null;
      if (name !== names[0] && names[0] === 'webtransport') {
        // WebTransport did not work here but WebSocket did: do not make
        // every reconnect wait for it.
        this.wtBroken.set(edge.href, Date.now() + FALLBACK_MEMORY_MS);
        this._stats.fallbacks++;
        this.emit('fallback', { from: names[0], to: name, reason: last ? last.message : '' });
      }
      if (this.sessions++ > 0) this._stats.reconnects++;
      this.current = t;
      if (this.waitingForBroadcast()) this.setState('connecting'); // the broadcast is (back) on
      this._stats.transport = name;
      this._stats.edge = edge.href;
      this._stats.connectMs = Math.round(performance.now() - t0);
      this.connectedAt = Date.now();
      this.emit('connected', { transport: name, edge: edge.href, connectMs: this._stats.connectMs });
      const end = await ended;
      this.current = null;
      t.close();
      this.endSession = null;
      return end;
    }
    this.endSession = null;
    return { kind: 'unreachable', reason: last ? last.message : '' };
  }

  /**
   * The handler a transport reports to; active() says whether it is still
   * the one in use.
   * @param {() => boolean} active
   * @returns {import('./transport.js').TransportHandler}
   */
  handler(active) {
    return {
      onCatalog: (c) => {
        if (!active()) return;
        this.setCatalog(c);
      },
      onObject: (f, epoch) => {
        if (!active()) return;
        const o = this.orderers[f.track];
        if (o) o.push(f, epoch);
      },
      onGroupAbort: (track, group) => {
        if (!active()) return;
        const o = this.orderers[track];
        if (o) o.abort(group);
      },
      onSkip: (track, from, to) => {
        if (!active()) return;
        const o = this.orderers[track];
        if (o) o.skipTo(to);
        this.emit('skip', { track, from, to });
      },
      onEnded: () => {
        if (!active()) return;
        this.setState('ended');
        this.emit('ended');
      },
      onGoAway: (url) => {
        if (!active()) return;
        this.emit('goaway', { url });
        if (this.endSession) this.endSession({ kind: 'goaway', url });
      },
      onClose: (code, reason) => {
        if (!active()) return;
        this.emit('close', { code, reason });
        if (this.endSession) this.endSession({ kind: 'closed', code, reason });
      },
    };
  }

  /** @param {import('./transport.js').CatalogEvent} c */
  setCatalog(c) {
    this.emit('catalog', c.catalog);
    this.sink.setCatalog(c.catalog, c.inits);
    const inOrder = this.opening ? this.opening.name !== 'webtransport' : !!this.current && this.current.name !== 'webtransport';
    const n = c.catalog.tracks.length;
    const fresh = this.orderers.length !== n || this.orderers.some((o) => o.inOrder !== inOrder);
    if (fresh) {
      for (const o of this.orderers) {
        this.retiredSkips += o.skippedGroups;
        this.retiredLate += o.lateObjects;
      }
      this.orderers = [];
      for (let i = 0; i < n; i++) {
        this.orderers.push(new GroupOrderer({ inOrder, onObject: (o) => this.deliver(o) }));
      }
    } else if (this.opening) {
      for (const o of this.orderers) o.reset(); // a new connection: start at its first keyframe
    }
  }

  /** @param {import('./order.js').OrderedObject} o */
  deliver(o) {
    this._stats.objects++;
    this._stats.bytes += o.frame.payload.byteLength;
    this.sink.append(o);
  }

  /** @param {number} capture µs */
  appended(capture) {
    const d = Date.now() - capture / 1000;
    this._stats.g2gMs = Math.round(d);
    this.g2g.push(d);
    if (this.g2g.length > G2G_WINDOW) this.g2g.shift();
    this.emit('appended', { g2gMs: d, capture });
  }

  /** Keeps playback near the live edge and publishes stats; runs every 250 ms. */
  tick() {
    const v = this.video;
    const b = v.buffered;
    const moved = v.currentTime !== this.lastTime;
    for (const o of this.orderers) o.tick();
    // A transport that plays by itself keeps its own live edge.
    const own = !!(this.current && this.current.ownsMedia);
    if (own && this.current) {
      const t = this.current;
      if (b.length > 0) this._stats.bufferMs = Math.round((b.end(b.length - 1) - v.currentTime) * 1000);
      this.updatePlaying(moved);
      const at = t.playingDate ? t.playingDate() : NaN;
      if (!isNaN(at)) this._stats.latencyMs = Math.round(Date.now() - at);
      if (t.counts) Object.assign(this._stats, t.counts());
    }
    if (!own && b.length > 0) {
      const end = b.end(b.length - 1);
      this.margin = Math.max(0, this.margin - MARGIN_DECAY / 4);
      const target = this.opts.targetLatency + this.margin;
      // Inside a hole (a skipped group, a reconnect, a new epoch), or at
      // the end of a range with more after it: go to the next range.
      let inRange = false;
      for (let i = 0; i < b.length; i++) {
        if (v.currentTime >= b.start(i) && v.currentTime <= b.end(i)) {
          inRange = true;
          if (i + 1 < b.length && b.end(i) - v.currentTime < 0.15 && v.readyState < 3) {
            v.currentTime = b.start(i + 1) + 0.001;
          }
          break;
        }
      }
      if (!inRange || end - v.currentTime > target + this.opts.jumpThreshold) {
        let to = Math.max(b.start(b.length - 1), end - target);
        for (let i = 0; i < b.length; i++) {
          if (b.start(i) > v.currentTime && end - b.start(i) <= target + this.opts.jumpThreshold) {
            to = Math.max(b.start(i), end - target);
            break;
          }
        }
        if (Math.abs(to - v.currentTime) > 0.05) v.currentTime = to;
      }
      // A new connection starts with its first group's backlog (up to a
      // group's length): start playing at the target, not behind it.
      if (Date.now() - this.connectedAt < 2000 && end - v.currentTime > target + 0.15) v.currentTime = end - target;
      const behind = end - v.currentTime;
      const rate = liveRate(behind, target);
      if (Math.abs(v.playbackRate - rate) > 0.005) v.playbackRate = rate;
      if (v.paused) v.play().catch(() => {});
      this._stats.bufferMs = Math.round(behind * 1000);
      this.updatePlaying(moved);
      const cap = this.sink.captureAt(v.currentTime);
      if (!isNaN(cap)) this._stats.latencyMs = Math.round(Date.now() - cap / 1000);
      this.sink.trim(20);
    }
    if (this.g2g.length > 0) {
      const s = [...this.g2g].sort((x, y) => x - y);
      this._stats.g2gP50Ms = Math.round(/** @type {number} */ (s[Math.floor((s.length - 1) * 0.5)]));
      this._stats.g2gP95Ms = Math.round(/** @type {number} */ (s[Math.floor((s.length - 1) * 0.95)]));
    }
    this.lastTime = v.currentTime; // after this tick's seeks
    const s = this.stats;
    this.emit('stats', s);
    if (this.overlayEl) {
      const ms = (/** @type {number} */ x) => (isNaN(x) ? '–' : `${x} ms`);
      this.overlayEl.textContent = `${s.transport || '…'} · ${s.state} · latency ${ms(s.latencyMs)} · g2g p50 ${ms(s.g2gP50Ms)}` +
        ` · buffer ${s.bufferMs} ms · frames ${s.decodedFrames} (${s.droppedFrames} dropped) · skipped groups ${s.skippedGroups} · stalls ${s.stalls}`;
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

/**
 * The playback rate that keeps behind (s of media buffered ahead of the
 * playhead) at target: 1 within a dead band of a quarter of the target
 * (10 to 100 ms); else proportional to the distance, at most 25 % faster
 * (catching up a second in about 5 s) and 5 % slower. Small targets
 * (?latency=0.1) need the narrow band: a 100 ms band around a 100 ms
 * target would let the buffer run dry or double.
 * @param {number} behind s
 * @param {number} target s
 * @returns {number}
 */
export function liveRate(behind, target) {
  const off = behind - target;
  const band = Math.min(0.1, Math.max(0.01, target / 4));
  if (Math.abs(off) < band) return 1;
  return Math.round(Math.min(1.25, Math.max(0.95, 1 + off * 0.5)) * 1000) / 1000;
}
