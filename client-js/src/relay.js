// The relay protocol (shared/relay/README.md) as a browser speaks it inside
// a WebTransport session: a control stream of length-prefixed JSON messages
// and one unidirectional stream per group, each a 22-byte group header then
// object frames (wire.js). These parsers are incremental: streams deliver
// bytes in chunks of any size.
import { HEADER_LEN, KIND_OBJECT, parseFrame } from './wire.js';

export const PROTOCOL_VERSION = 1;
export const GROUP_HEADER_LEN = 22;
/** Largest control message (1 MiB), as in shared/relay. */
export const MAX_CONTROL = 1 << 20;
/** Largest object payload (wire.MaxPayload, 16 MiB − 1). */
export const MAX_PAYLOAD = (1 << 24) - 1;

/**
 * @typedef {object} ControlMessage
 * @property {string} type   hello, hello_ok, subscribe, subscribe_ok, announce, unsubscribe, ended, error, goaway
 * @property {number} [id]
 * @property {string} [token]
 * @property {string} [node]
 * @property {number} [version]
 * @property {string} [broadcast]
 * @property {number} [start]
 * @property {any} [catalog]
 * @property {string[]} [inits]  base64, one init segment per track
 * @property {number} [code]
 * @property {string} [reason]
 * @property {string} [url]
 */

/**
 * @typedef {object} GroupHeader
 * @property {number} sub    subscription id
 * @property {number} track
 * @property {number} group  exact below 2^53
 * @property {number} epoch  exact below 2^53
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encodes one control message: a 4-byte big-endian length, then JSON.
 * @param {ControlMessage} msg
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function encodeControl(msg) {
  const json = encoder.encode(JSON.stringify(msg));
  if (json.byteLength > MAX_CONTROL) throw new Error(`quiccast: control message of ${json.byteLength} bytes is over ${MAX_CONTROL}`);
  const out = new Uint8Array(4 + json.byteLength);
  new DataView(out.buffer).setUint32(0, json.byteLength);
  out.set(json, 4);
  return out;
}

/**
 * Chunks received and not yet consumed, read without copying when a read
 * falls inside one chunk.
 */
export class ByteQueue {
  constructor() {
    /** @type {Uint8Array<ArrayBuffer>[]} */ this.chunks = [];
    this.length = 0;
  }

  /** @param {Uint8Array<ArrayBuffer>} b */
  push(b) {
    if (b.byteLength === 0) return;
    this.chunks.push(b);
    this.length += b.byteLength;
  }

  /**
   * Removes and returns the first n bytes (n <= length).
   * @param {number} n
   * @returns {Uint8Array<ArrayBuffer>}
   */
  take(n) {
    const first = this.chunks[0];
    if (first.byteLength >= n) {
      const out = first.subarray(0, n);
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = /** @type {Uint8Array<ArrayBuffer>} */ (this.chunks[0]);
      const k = Math.min(c.byteLength, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.byteLength) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.length -= n;
    return out;
  }

  /**
   * Returns a copy of the first n bytes without consuming them.
   * @param {number} n
   */
  peek(n) {
    const out = new Uint8Array(n);
    let off = 0;
    for (const c of this.chunks) {
      if (off >= n) break;
      const k = Math.min(c.byteLength, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
    }
    return out;
  }
}

/** Parses the control stream: 4-byte length, then that much JSON. */
export class ControlParser {
  /** @param {number} [max] largest message accepted */
  constructor(max = MAX_CONTROL) {
    this.max = max;
    this.q = new ByteQueue();
    this.need = -1; // length of the message being read, -1 before its prefix
  }

  /**
   * Takes the next chunk of the stream and returns the messages it
   * completed.
   * @param {Uint8Array<ArrayBuffer>} chunk
   * @returns {ControlMessage[]}
   * @throws {Error} on a message over the limit, bad JSON or without a type
   */
  push(chunk) {
    this.q.push(chunk);
    /** @type {ControlMessage[]} */
    const out = [];
    for (;;) {
      if (this.need < 0) {
        if (this.q.length < 4) return out;
        const n = new DataView(this.q.take(4).slice().buffer).getUint32(0);
        if (n > this.max) throw new Error(`quiccast: control message of ${n} bytes, limit ${this.max}`);
        this.need = n;
      }
      if (this.q.length < this.need) return out;
      const body = this.q.take(this.need);
      this.need = -1;
      let m;
      try {
        m = JSON.parse(decoder.decode(body));
      } catch (e) {
        throw new Error(`quiccast: control message is not JSON: ${e}`);
      }
      if (!m || typeof m !== 'object' || typeof m.type !== 'string' || m.type === '') {
        throw new Error('quiccast: control message without a type');
      }
      out.push(m);
    }
  }
}

/**
 * Reads a group header.
 * @param {Uint8Array} b at least GROUP_HEADER_LEN bytes
 * @returns {GroupHeader}
 */
export function parseGroupHeader(b) {
  if (b.byteLength < GROUP_HEADER_LEN) throw new Error(`quiccast: group header of ${b.byteLength} bytes, want ${GROUP_HEADER_LEN}`);
  const v = new DataView(b.buffer, b.byteOffset, GROUP_HEADER_LEN);
  return { sub: v.getUint32(0), track: v.getUint16(4), group: Number(v.getBigUint64(6)), epoch: Number(v.getBigUint64(14)) };
}

/**
 * Builds a group header (tests and tools).
 * @param {GroupHeader} h
 * @returns {Uint8Array}
 */
export function buildGroupHeader(h) {
  const out = new Uint8Array(GROUP_HEADER_LEN);
  const v = new DataView(out.buffer);
  v.setUint32(0, h.sub);
  v.setUint16(4, h.track);
  v.setBigUint64(6, BigInt(h.group));
  v.setBigUint64(14, BigInt(h.epoch));
  return out;
}

/**
 * Parses one group stream: the group header, then object frames of that
 * track and group. Bytes are buffered only up to one frame, which is at
 * most maxPayload plus its header.
 */
export class GroupParser {
  /** @param {number} [maxPayload] */
  constructor(maxPayload = MAX_PAYLOAD) {
    this.maxPayload = maxPayload;
    this.q = new ByteQueue();
    /** @type {GroupHeader|null} */ this.header = null;
    this.need = -1; // bytes of the frame being read, -1 before its header
  }

  /**
   * Takes the next chunk and returns the frames it completed; header is
   * set once its 22 bytes arrived.
   * @param {Uint8Array<ArrayBuffer>} chunk
   * @returns {import('./wire.js').Frame[]}
   * @throws {Error} on a malformed stream
   */
  push(chunk) {
    this.q.push(chunk);
    /** @type {import('./wire.js').Frame[]} */
    const out = [];
    if (!this.header) {
      if (this.q.length < GROUP_HEADER_LEN) return out;
      this.header = parseGroupHeader(this.q.take(GROUP_HEADER_LEN));
    }
    for (;;) {
      if (this.need < 0) {
        if (this.q.length < HEADER_LEN) return out;
        const len = new DataView(this.q.peek(HEADER_LEN).buffer).getUint32(32);
        if (len > this.maxPayload) throw new Error(`quiccast: object of ${len} bytes, limit ${this.maxPayload}`);
        this.need = HEADER_LEN + len;
      }
      if (this.q.length < this.need) return out;
      const f = parseFrame(this.q.take(this.need));
      this.need = -1;
      if (f.kind !== KIND_OBJECT) throw new Error(`quiccast: frame of kind ${f.kind} on a group stream`);
      if (f.track !== this.header.track || f.group !== this.header.group) {
        throw new Error(`quiccast: frame of track ${f.track} group ${f.group} on the stream of track ${this.header.track} group ${this.header.group}`);
      }
      out.push(f);
    }
  }

  /** Bytes received and not yet part of a complete frame. */
  get pending() {
    return this.q.length;
  }
}

/**
 * Decodes base64 (init segments in SUBSCRIBE_OK and ANNOUNCE).
 * @param {string} s
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
