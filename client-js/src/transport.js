// What a way of reaching an edge (WebTransport, WebSocket, and others to
// come, such as LL-HLS) gives the player, and the registry the player picks
// them from by name.

/**
 * @typedef {object} CatalogEvent
 * @property {{broadcast: string, epoch: number, tracks: {id: number, kind: string, codec: string, mimeType: string, timescale: number}[]}} catalog
 * @property {Uint8Array<ArrayBuffer>[]} inits one init segment per track
 */

/**
 * What a transport reports. The player fills it in.
 * @typedef {object} TransportHandler
 * @property {(c: CatalogEvent) => void} onCatalog   the catalog, at the start and at each new epoch
 * @property {(f: import('./wire.js').Frame, epoch: number) => void} onObject an object or end-of-group marker
 * @property {(track: number, group: number) => void} onGroupAbort a group ended without its end marker (reset, cut)
 * @property {(track: number, from: number, to: number) => void} onSkip the edge skipped groups from..to-1
 * @property {() => void} onEnded    the broadcast ended
 * @property {(url: string) => void} onGoAway the edge is draining: reconnect (to url if set)
 * @property {(code: number, reason: string) => void} onClose the connection is gone (after it opened)
 */

/**
 * How to reach the edge.
 * @typedef {object} TransportContext
 * @property {URL} edge         the edge's base URL (http: or https:)
 * @property {string} broadcast
 * @property {string} [token]
 * @property {TransportHandler} handler
 * @property {number} connectTimeout ms until the transport must be open
 * @property {HTMLVideoElement} video for transports that play by themselves
 * @property {number} [webtransportPort] overrides the UDP port the edge advertises
 * @property {number} [start]    for the recording transport: the wall-clock (ms since the Unix epoch) to play from
 * @property {boolean} [preview] for LL-HLS: ask the edge not to count this player as a viewer (the dashboard's previews)
 * @property {number} [targetLatency] s behind the live edge, when the page asked for one (?latency=); transports that play by themselves (LL-HLS) use it, else their own default
 */

/**
 * One connection. opened resolves once the catalog came; it rejects with a
 * TransportError.
 * @typedef {object} Transport
 * @property {string} name
 * @property {Promise<void>} opened
 * @property {() => void} close
 * @property {boolean} [ownsMedia] the transport plays into ctx.video itself (no MSE sink from the player)
 * @property {() => number} [playingDate] for ownsMedia: wall-clock (ms) of the frame on screen, NaN if unknown
 * @property {() => {objects: number, bytes: number}} [counts] for ownsMedia: parts or segments received and their bytes
 * @property {() => Record<string, any>} [info] what plays the media, for tests and the console
 */

/** @typedef {(ctx: TransportContext) => Transport} TransportFactory */

/**
 * Why a transport failed. unreachable: the transport itself did not work
 * (missing in this browser, blocked, timed out), so another may; otherwise
 * the edge refused with code (shared/wire codes: 4004 no such broadcast,
 * 4001 bad token, …) and another transport would get the same answer.
 */
export class TransportError extends Error {
  /**
   * @param {string} message
   * @param {{code?: number, unreachable?: boolean}} [o]
   */
  constructor(message, o = {}) {
    super(message);
    this.code = o.code || 0;
    this.unreachable = !!o.unreachable;
  }
}

/** @type {Map<string, TransportFactory>} */
const registry = new Map();

/**
 * Makes a transport available to Player's transport option.
 * @param {string} name
 * @param {TransportFactory} factory
 */
export function registerTransport(name, factory) {
  registry.set(name, factory);
}

/**
 * @param {string} name
 * @returns {TransportFactory|undefined}
 */
export function transportFactory(name) {
  return registry.get(name);
}

/**
 * Builds an edge URL for a path, query token included.
 * @param {URL} edge
 * @param {string} protocol
 * @param {string} path
 * @param {string} [token]
 */
export function edgeURL(edge, protocol, path, token) {
  const u = new URL(edge.href);
  u.protocol = protocol;
  u.pathname = path;
  u.search = token ? '?token=' + encodeURIComponent(token) : '';
  u.hash = '';
  return u;
}

/**
 * Resolves with p, or rejects with err after ms.
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {() => Error} err
 * @returns {Promise<T>}
 */
export function withTimeout(p, ms, err) {
  /** @type {any} */
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => { timer = setTimeout(() => reject(err()), ms); }),
  ]).finally(() => clearTimeout(timer));
}
