// quiccast object framing, the JavaScript twin of shared/wire (Go).
// Layout (big-endian), documented in shared/wire/README.md:
//
//   off len field
//    0   1  kind        1 = object, 2 = init segment
//    1   1  flags       bit0 keyframe, bit1 end of group, bit2 discontinuity
//    2   2  track
//    4   4  index       object index within its group
//    8   8  group       group sequence number
//   16   8  decodeTime  in the track's timescale
//   24   8  capture     capture wall-clock, µs since the Unix epoch
//   32   4  length      payload bytes
//   36   …  payload     CMAF chunk (moof+mdat) or init segment (ftyp+moov)

export const HEADER_LEN = 36;
export const KIND_OBJECT = 1;
export const KIND_INIT = 2;
export const FLAG_KEYFRAME = 1;
export const FLAG_END_OF_GROUP = 2;
export const FLAG_DISCONTINUITY = 4;

/**
 * @typedef {object} Frame
 * @property {number} kind
 * @property {number} flags
 * @property {number} track
 * @property {number} index
 * @property {number} group       exact below 2^53
 * @property {number} decodeTime  exact below 2^53
 * @property {number} capture     µs since the Unix epoch
 * @property {Uint8Array<ArrayBuffer>} payload a view into the input, not a copy
 */

/**
 * Parses one whole frame (one WebSocket message).
 * @param {ArrayBuffer|Uint8Array<ArrayBuffer>} data
 * @returns {Frame}
 * @throws {Error} when the frame is malformed
 */
export function parseFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength < HEADER_LEN) {
    throw new Error(`quiccast: frame of ${bytes.byteLength} bytes is shorter than its ${HEADER_LEN}-byte header`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = v.getUint8(0);
  if (kind !== KIND_OBJECT && kind !== KIND_INIT) {
    throw new Error(`quiccast: unknown frame kind ${kind}`);
  }
  const flags = v.getUint8(1);
  if (flags & ~(FLAG_KEYFRAME | FLAG_END_OF_GROUP | FLAG_DISCONTINUITY)) {
    throw new Error(`quiccast: unknown flag bits 0x${flags.toString(16)}`);
  }
  const length = v.getUint32(32);
  if (length !== bytes.byteLength - HEADER_LEN) {
    throw new Error(`quiccast: header says ${length} payload bytes, frame has ${bytes.byteLength - HEADER_LEN}`);
  }
  return {
    kind,
    flags,
    track: v.getUint16(2),
    index: v.getUint32(4),
    group: Number(v.getBigUint64(8)),
    decodeTime: Number(v.getBigUint64(16)),
    capture: Number(v.getBigInt64(24)),
    payload: bytes.subarray(HEADER_LEN),
  };
}

/**
 * Builds a frame; the inverse of parseFrame (used by tests and tools).
 * @param {Omit<Frame, 'payload'>} h
 * @param {Uint8Array} payload
 * @returns {Uint8Array}
 */
export function buildFrame(h, payload) {
  const out = new Uint8Array(HEADER_LEN + payload.byteLength);
  const v = new DataView(out.buffer);
  v.setUint8(0, h.kind);
  v.setUint8(1, h.flags);
  v.setUint16(2, h.track);
  v.setUint32(4, h.index);
  v.setBigUint64(8, BigInt(h.group));
  v.setBigUint64(16, BigInt(h.decodeTime));
  v.setBigInt64(24, BigInt(h.capture));
  v.setUint32(32, payload.byteLength);
  out.set(payload, HEADER_LEN);
  return out;
}
