import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseFrame, buildFrame, HEADER_LEN, KIND_OBJECT, KIND_INIT, FLAG_KEYFRAME } from '../src/wire.js';

test('round trip keeps every field and the payload', () => {
  const h = { kind: KIND_OBJECT, flags: FLAG_KEYFRAME, track: 3, index: 7, group: 2 ** 40 + 5, decodeTime: 2 ** 50 + 1, capture: 1_763_700_000_123_456 };
  const payload = new Uint8Array([1, 2, 3, 250]);
  const f = parseFrame(buildFrame(h, payload));
  assert.deepEqual({ ...f, payload: undefined }, { ...h, payload: undefined });
  assert.deepEqual([...f.payload], [1, 2, 3, 250]);
});

test('reads the frame written by the Go encoder', () => {
  // shared/wire/testdata/golden.bin is written by the Go test TestGolden.
  const golden = readFileSync(new URL('../../shared/wire/testdata/golden.bin', import.meta.url));
  const f = parseFrame(golden);
  assert.equal(f.kind, KIND_OBJECT);
  assert.equal(f.flags, 5);
  assert.equal(f.track, 1);
  assert.equal(f.index, 2);
  assert.equal(f.group, 3);
  assert.equal(f.decodeTime, 90000);
  assert.equal(f.capture, 1700000000000000);
  assert.equal(new TextDecoder().decode(f.payload), 'moof+mdat');
});

test('init frames parse', () => {
  const f = parseFrame(buildFrame({ kind: KIND_INIT, flags: 0, track: 0, index: 0, group: 0, decodeTime: 0, capture: 0 }, new Uint8Array(10)));
  assert.equal(f.kind, KIND_INIT);
  assert.equal(f.payload.byteLength, 10);
});

test('rejects malformed frames with a reason', () => {
  assert.throws(() => parseFrame(new Uint8Array(HEADER_LEN - 1)), /shorter than/);
  const bad = buildFrame({ kind: KIND_OBJECT, flags: 0, track: 0, index: 0, group: 0, decodeTime: 0, capture: 0 }, new Uint8Array(4));
  bad[0] = 9;
  assert.throws(() => parseFrame(bad), /unknown frame kind 9/);
  bad[0] = KIND_OBJECT;
  bad[1] = 0x80;
  assert.throws(() => parseFrame(bad), /unknown flag bits/);
  bad[1] = 0;
  assert.throws(() => parseFrame(bad.subarray(0, bad.byteLength - 1)), /header says 4 payload bytes, frame has 3/);
});

test('payload is a view into the input, not a copy', () => {
  const buf = buildFrame({ kind: KIND_OBJECT, flags: 0, track: 0, index: 0, group: 0, decodeTime: 0, capture: 0 }, new Uint8Array([9]));
  const f = parseFrame(buf);
  buf[HEADER_LEN] = 42;
  assert.equal(f.payload[0], 42);
});
