import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ControlParser, GroupParser, ByteQueue, encodeControl, parseGroupHeader, buildGroupHeader, fromBase64,
  GROUP_HEADER_LEN, MAX_CONTROL,
} from '../src/relay.js';
import { buildFrame, KIND_OBJECT, KIND_INIT, FLAG_KEYFRAME, FLAG_END_OF_GROUP } from '../src/wire.js';

// shared/relay/testdata/*.bin are written by the Go test TestGoldenRelayBytes.
const golden = (name) => new Uint8Array(readFileSync(new URL(`../../shared/relay/testdata/${name}`, import.meta.url)));

/**
 * Splits b into pieces at the given cut points.
 * @param {Uint8Array} b
 * @param {number[]} cuts
 */
function split(b, cuts) {
  const out = [];
  let at = 0;
  for (const c of [...cuts, b.byteLength]) {
    out.push(b.slice(at, c));
    at = c;
  }
  return out;
}

test('control messages written by the Go encoder parse, whole and byte by byte', () => {
  const b = golden('control.bin');
  const whole = new ControlParser().push(b);
  assert.equal(whole.length, 2);
  assert.deepEqual(whole[0], { type: 'hello_ok', node: 'edge-1' });
  const ok = whole[1];
  assert.equal(ok.type, 'subscribe_ok');
  assert.equal(ok.id, 1);
  assert.equal(ok.start, 7);
  assert.equal(ok.catalog.broadcast, 'live/golden');
  assert.equal(ok.catalog.epoch, 2);
  assert.equal(ok.catalog.tracks[0].mimeType, 'video/mp4; codecs="avc1.42E01E"');
  assert.equal(new TextDecoder().decode(fromBase64(ok.inits[0])), 'ftyp+moov');

  const p = new ControlParser();
  const got = [];
  for (let i = 0; i < b.byteLength; i++) got.push(...p.push(b.slice(i, i + 1)));
  assert.deepEqual(got, whole);
});

test('encodeControl round-trips and prefixes the length', () => {
  const m = { type: 'subscribe', id: 3, broadcast: 'a/b' };
  const b = encodeControl(m);
  const len = new DataView(b.buffer).getUint32(0);
  assert.equal(len, b.byteLength - 4);
  assert.deepEqual(new ControlParser().push(b), [m]);
  // Two messages in one chunk, the second cut in its length prefix.
  const hello = encodeControl({ type: 'hello', version: 1 });
  const two = new Uint8Array([...hello, ...encodeControl({ type: 'goaway', url: 'https://e2' })]);
  const p = new ControlParser();
  const cut = hello.byteLength + 2;
  assert.deepEqual(p.push(two.slice(0, cut)).map((x) => x.type), ['hello']);
  assert.deepEqual(p.push(two.slice(cut)).map((x) => x.type), ['goaway']);
});

test('bad control messages are errors with a reason', () => {
  const big = new Uint8Array(4);
  new DataView(big.buffer).setUint32(0, MAX_CONTROL + 1);
  assert.throws(() => new ControlParser().push(big), /limit/);
  const notJSON = new Uint8Array([0, 0, 0, 3, 0x7b, 0x7b, 0x7b]);
  assert.throws(() => new ControlParser().push(notJSON), /not JSON/);
  const noType = encodeControl(/** @type {any} */ ({ id: 1 }));
  assert.throws(() => new ControlParser().push(noType), /without a type/);
});

test('a group stream written by the Go encoder parses, split anywhere', () => {
  const b = golden('group.bin');
  const check = (/** @type {Uint8Array[]} */ chunks) => {
    const p = new GroupParser();
    const frames = [];
    for (const c of chunks) frames.push(...p.push(c));
    assert.deepEqual(p.header, { sub: 1, track: 0, group: 7, epoch: 2 });
    assert.equal(frames.length, 3);
    assert.deepEqual(frames.map((f) => [f.index, f.flags, f.decodeTime, f.capture]), [
      [0, FLAG_KEYFRAME, 630000, 1700000000000000],
      [1, 0, 633000, 1700000000033333],
      [2, FLAG_END_OF_GROUP, 636000, 1700000000066666],
    ]);
    assert.equal(new TextDecoder().decode(frames[1].payload), 'moof+mdat 1');
    assert.equal(frames[2].payload.byteLength, 0);
    assert.equal(p.pending, 0);
  };
  check([b]);
  check(split(b, [1, 21, 22, 23, 57, 58, 80]));
  check(Array.from(b, (x) => new Uint8Array([x])));
  // Every single cut point.
  for (let i = 1; i < b.byteLength; i++) check(split(b, [i]));
});

test('group header fields', () => {
  const h = { sub: 4000000000, track: 65535, group: 2 ** 50 + 3, epoch: 9 };
  const b = buildGroupHeader(h);
  assert.equal(b.byteLength, GROUP_HEADER_LEN);
  assert.deepEqual(parseGroupHeader(b), h);
  assert.throws(() => parseGroupHeader(b.subarray(0, 21)), /22/);
});

test('a group stream with a wrong frame is an error', () => {
  const hdr = buildGroupHeader({ sub: 1, track: 0, group: 5, epoch: 1 });
  const frame = (/** @type {any} */ h) => buildFrame({ kind: KIND_OBJECT, flags: 0, track: 0, index: 0, group: 5, decodeTime: 0, capture: 0, ...h }, new Uint8Array(3));
  assert.throws(() => new GroupParser().push(new Uint8Array([...hdr, ...frame({ group: 6 })])), /group 6 on the stream of track 0 group 5/);
  assert.throws(() => new GroupParser().push(new Uint8Array([...hdr, ...frame({ kind: KIND_INIT })])), /kind 2/);
  // An oversized length is refused before its bytes are buffered.
  const p = new GroupParser(1000);
  const f = frame({});
  new DataView(f.buffer).setUint32(32, 5000);
  assert.throws(() => p.push(new Uint8Array([...hdr, ...f.subarray(0, 36)])), /5000 bytes, limit 1000/);
});

test('ByteQueue takes across chunks without losing bytes', () => {
  const q = new ByteQueue();
  q.push(new Uint8Array([1, 2]));
  q.push(new Uint8Array([]));
  q.push(new Uint8Array([3, 4, 5]));
  assert.deepEqual([...q.peek(3)], [1, 2, 3]);
  assert.deepEqual([...q.take(1)], [1]);
  assert.deepEqual([...q.take(3)], [2, 3, 4]);
  assert.equal(q.length, 1);
  assert.deepEqual([...q.take(1)], [5]);
  assert.equal(q.length, 0);
});
