import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findPosition } from '../src/transport-rec.js';

const list = [
  { id: 'a', playlist: '/recordings/x/a/index.m3u8', ended: true,
    spans: [{ start: '2026-12-03T09:00:00Z', duration: 10 }, { start: '2026-12-03T09:00:30Z', duration: 5 }] },
  { id: 'b', playlist: '/recordings/x/b/index.m3u8', ended: false,
    spans: [{ start: '2026-12-03T10:00:00Z', duration: 60 }] },
];

test('a time inside a span is that far into the playlist, spans before it counted', () => {
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T09:00:04Z')), { rec: list[0], position: 4 });
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T09:00:32Z')), { rec: list[0], position: 12 });
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T10:00:59Z')), { rec: list[1], position: 59 });
});

test('a time in a gap or before a recording starts where the next span does', () => {
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T09:00:20Z')), { rec: list[0], position: 10 });
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T09:30:00Z')), { rec: list[1], position: 0 });
  assert.deepEqual(findPosition(list, Date.parse('2026-12-03T08:00:00Z')), { rec: list[0], position: 0 });
});

test('a time after every recording finds none', () => {
  assert.equal(findPosition(list, Date.parse('2026-12-03T11:00:00Z')), null);
});
