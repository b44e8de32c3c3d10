// WebTransport transport: a session at https://{edge host}:{port}/wt/{broadcast}
// over HTTP/3 speaking the relay protocol (relay.js). The edge's /cert-hash
// says which UDP port to use and, for a development certificate, the
// hashes to pin with serverCertificateHashes.
import { ControlParser, GroupParser, encodeControl, fromBase64, PROTOCOL_VERSION } from './relay.js';
import { FLAG_END_OF_GROUP } from './wire.js';
import { TransportError, edgeURL, withTimeout } from './transport.js';

const SUB_ID = 1;
const SUBSCRIBE_TIMEOUT = 10000;

/**
 * @typedef {object} CertHashes
 * @property {number} port      UDP port of HTTP/3 and WebTransport
 * @property {string[]} hashes  base64 SHA-256 of the development certificates (empty with a real certificate)
 */

/**
 * Asks the edge how to reach it over WebTransport.
 * @param {URL} edge
 * @param {AbortSignal} signal
 * @returns {Promise<CertHashes>}
 */
async function certHashes(edge, signal) {
  const r = await fetch(edgeURL(edge, edge.protocol, '/cert-hash'), { signal, cache: 'no-store' });
  if (r.status === 404) throw new TransportError('WebTransport is off on this edge', { unreachable: true });
  if (!r.ok) throw new TransportError(`/cert-hash: HTTP ${r.status}`, { unreachable: true });
  return r.json();
}

/**
 * @param {import('./transport.js').TransportContext} ctx
 * @returns {import('./transport.js').Transport}
 */
export function openWebTransport(ctx) {
  const h = ctx.handler;
  const abort = new AbortController();
  /** @type {WebTransport|null} */ let wt = null;
  let open = false;
  let closed = false;
  /** @type {WritableStreamDefaultWriter<Uint8Array>|null} */ let writer = null;
  /** @type {Map<number, any>} catalogs by epoch */
  const catalogs = new Map();
  /** @type {Map<number, (() => void)[]>} group streams waiting for their epoch's catalog */
  const waiting = new Map();

  /**
   * Resolves true once the catalog of epoch is here: a group stream can
   * overtake the ANNOUNCE of its epoch. False after ms.
   * @param {number} epoch
   * @param {number} ms
   * @returns {Promise<boolean>}
   */
  const catalogOf = (epoch, ms) => {
    if (catalogs.has(epoch)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      const list = waiting.get(epoch) || [];
      list.push(() => { clearTimeout(timer); resolve(true); });
      waiting.set(epoch, list);
    });
  };

  /** @param {import('./relay.js').ControlMessage} m */
  const send = (m) => {
    if (writer) writer.write(encodeControl(m)).catch(() => {});
  };

  /** @param {import('./relay.js').ControlMessage} m */
  const catalogEvent = (m) => {
    const inits = (m.inits || []).map(fromBase64);
    catalogs.set(m.catalog.epoch, m.catalog);
    if (catalogs.size > 8) catalogs.delete(/** @type {number} */ (catalogs.keys().next().value));
    return { catalog: m.catalog, inits };
  };

  const started = Date.now();
  const unreachable = () => new TransportError(`WebTransport: not connected within ${ctx.connectTimeout} ms`, { unreachable: true });

  const connect = async () => {
    if (typeof WebTransport === 'undefined') throw new TransportError('this browser has no WebTransport', { unreachable: true });
    const info = await withTimeout(certHashes(ctx.edge, abort.signal), ctx.connectTimeout, unreachable);
    const u = edgeURL(ctx.edge, 'https:', '/wt/' + ctx.broadcast, ctx.token);
    u.port = String(ctx.webtransportPort || info.port);
    /** @type {WebTransportOptions} */
    const opts = {};
    if (info.hashes && info.hashes.length > 0) {
      opts.serverCertificateHashes = info.hashes.map((b) => ({ algorithm: 'sha-256', value: fromBase64(b) }));
    }
    if (closed) throw new TransportError('closed', { code: 1000 });
    wt = new WebTransport(u.toString(), opts);
    wt.closed.then(
      (ci) => finish(ci.closeCode || 0, ci.reason || ''),
      (e) => finish(0, String(e && e.message || e)),
    );
    // Slow to connect counts as blocked: fall back rather than wait.
    await withTimeout(wt.ready, Math.max(0, ctx.connectTimeout - (Date.now() - started)), unreachable);
    const ctl = await wt.createBidirectionalStream();
    writer = ctl.writable.getWriter();
    send({ type: 'hello', token: ctx.token || '', node: 'browser', version: PROTOCOL_VERSION });
    send({ type: 'subscribe', id: SUB_ID, broadcast: ctx.broadcast });
    acceptGroups(wt);
    // Connected: the answer may take an upstream subscription's time.
    await withTimeout(readControl(ctl.readable), SUBSCRIBE_TIMEOUT, () => new TransportError(`no answer to SUBSCRIBE within ${SUBSCRIBE_TIMEOUT} ms`));
  };

  /**
   * Reads the control stream; resolves at SUBSCRIBE_OK, then keeps reading.
   * @param {ReadableStream<Uint8Array<ArrayBuffer>>} rs
   * @returns {Promise<void>}
   */
  const readControl = (rs) => new Promise((resolve, reject) => {
    const parser = new ControlParser();
    const reader = rs.getReader();
    const loop = async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new TransportError('control stream ended', { unreachable: !open });
        for (const m of parser.push(value)) {
          switch (m.type) {
            case 'hello_ok':
              break;
            case 'subscribe_ok':
              if (m.id !== SUB_ID) break;
              h.onCatalog(catalogEvent(m));
              open = true;
              resolve();
              wake(m.catalog.epoch);
              break;
            case 'announce':
              if (m.id !== SUB_ID) break;
              h.onCatalog(catalogEvent(m));
              wake(m.catalog.epoch);
              break;
            case 'ended':
              // As over WebSocket: ended, then the connection closes
              // (the player looks for the broadcast again later).
              if (m.id !== SUB_ID) break;
              if (!open) {
                reject(new TransportError('broadcast ended', { code: 4004 }));
                return;
              }
              h.onEnded();
              closeWith(1000, 'broadcast ended');
              return;
            case 'goaway':
              h.onGoAway(m.url || '');
              break;
            case 'error': {
              const err = new TransportError(m.reason || 'refused', { code: m.code || 0 });
              if (!open) {
                reject(err);
                return;
              }
              closeWith(m.code || 0, m.reason || '');
              return;
            }
          }
        }
      }
    };
    loop().catch((e) => {
      if (!open) reject(e instanceof TransportError ? e : new TransportError(String(e), { unreachable: true }));
      else closeWith(4000, String(e));
    });
  });

  /** @param {number} epoch */
  const wake = (epoch) => {
    for (const f of waiting.get(epoch) || []) f();
    waiting.delete(epoch);
  };

  /** @param {WebTransport} t */
  const acceptGroups = async (t) => {
    const reader = t.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || closed) return;
        readGroup(/** @type {ReadableStream<Uint8Array<ArrayBuffer>>} */ (value));
      }
    } catch {
      // the session closed
    }
  };

  /** @param {ReadableStream<Uint8Array<ArrayBuffer>>} rs */
  const readGroup = async (rs) => {
    const parser = new GroupParser();
    const reader = rs.getReader();
    let complete = false;
    /** @type {number} */ let epoch = -1;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || closed) break;
        const frames = parser.push(value);
        const hd = parser.header;
        if (hd && epoch < 0) {
          if (hd.sub !== SUB_ID) throw new Error(`group of subscription ${hd.sub}`);
          epoch = hd.epoch;
          // Not read further meanwhile: the stream's flow control holds the rest.
          if (!(await catalogOf(epoch, SUBSCRIBE_TIMEOUT))) throw new Error(`no catalog for epoch ${epoch}`);
          if (closed) break;
        }
        for (const f of frames) {
          if (f.flags & FLAG_END_OF_GROUP) complete = true;
          h.onObject(f, epoch);
        }
      }
    } catch {
      // reset by the edge (it fell too far behind) or malformed
      reader.cancel().catch(() => {});
    }
    if (!complete && parser.header && !closed) h.onGroupAbort(parser.header.track, parser.header.group);
  };

  /**
   * @param {number} code
   * @param {string} reason
   */
  const closeWith = (code, reason) => {
    if (wt && !closed) {
      try {
        wt.close({ closeCode: code, reason: reason.slice(0, 100) });
      } catch {
        // already closing
      }
    }
    finish(code, reason);
  };

  /**
   * @param {number} code
   * @param {string} reason
   */
  const finish = (code, reason) => {
    if (closed) return;
    closed = true;
    abort.abort();
    if (open) h.onClose(code, reason);
  };

  const opened = connect()
    .catch((e) => {
      closeWith(0, 'connect failed');
      throw e instanceof TransportError ? e : new TransportError(String(e && e.message || e), { unreachable: true });
    });

  return {
    name: 'webtransport',
    opened,
    close() {
      closeWith(0, '');
    },
  };
}
