// WebSocket transport: /ws/{broadcast}, one binary message per frame and
// JSON text messages for control (shared/wire/README.md). Works wherever
// WebSocket does, so it is the fallback.
import { parseFrame, KIND_INIT, KIND_OBJECT } from './wire.js';
import { TransportError, edgeURL } from './transport.js';

/**
 * @param {import('./transport.js').TransportContext} ctx
 * @returns {import('./transport.js').Transport}
 */
export function openWebSocket(ctx) {
  const h = ctx.handler;
  const url = edgeURL(ctx.edge, ctx.edge.protocol === 'https:' ? 'wss:' : 'ws:', '/ws/' + ctx.broadcast, ctx.token);
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  let open = false;
  let closed = false;
  /** @type {any} */ let pending = null; // a catalog waiting for its init frames
  /** @type {Uint8Array<ArrayBuffer>[]} */ let inits = [];
  let epoch = 0;
  /** @type {(v?: any) => void} */ let resolve = () => {};
  /** @type {(e: any) => void} */ let reject = () => {};
  /** @type {Promise<void>} */
  const opened = new Promise((res, rej) => { resolve = res; reject = rej; });
  const timer = setTimeout(() => {
    if (open) return;
    closed = true;
    ws.close();
    reject(new TransportError(`WebSocket: no catalog within ${ctx.connectTimeout} ms`, { unreachable: true }));
  }, ctx.connectTimeout);

  ws.onmessage = (ev) => {
    if (closed) return;
    if (typeof ev.data === 'string') {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      switch (m.type) {
        case 'catalog':
          pending = m.catalog;
          inits = [];
          break;
        case 'skip':
          h.onSkip(m.track || 0, m.from, m.to);
          break;
        case 'ended':
          h.onEnded();
          break;
        case 'goaway':
          h.onGoAway(m.url || '');
          break;
      }
      return;
    }
    let f;
    try {
      f = parseFrame(ev.data);
    } catch (e) {
      ws.close(4000, 'bad frame');
      return;
    }
    if (f.kind === KIND_INIT) {
      if (!pending) return;
      inits[f.track] = f.payload;
      if (inits.filter(Boolean).length >= pending.tracks.length) {
        epoch = pending.epoch;
        h.onCatalog({ catalog: pending, inits });
        pending = null;
        if (!open) {
          open = true;
          clearTimeout(timer);
          resolve();
        }
      }
      return;
    }
    if (f.kind === KIND_OBJECT && open) h.onObject(f, epoch);
  };
  ws.onclose = (ev) => {
    clearTimeout(timer);
    if (closed) return;
    closed = true;
    if (open) {
      h.onClose(ev.code, ev.reason);
      return;
    }
    // 1006: never connected or cut without a close frame.
    reject(new TransportError(`WebSocket closed ${ev.code} ${ev.reason}`, { code: ev.code === 1006 ? 0 : ev.code, unreachable: ev.code === 1006 }));
  };
  return {
    name: 'websocket',
    opened,
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      ws.close(1000);
      reject(new TransportError('closed', { code: 1000 }));
    },
  };
}
