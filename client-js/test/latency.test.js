// The live-edge rate controls: the player's own (MSE transports) and the
// catch-up it adds to hls.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { liveRate } from '../src/player.js';
import { catchUpRate, hlsConfig } from '../src/transport-hls.js';

test('liveRate keeps 1 near the target, with a band that shrinks with it', () => {
  assert.equal(liveRate(0.5, 0.5), 1);
  assert.equal(liveRate(0.59, 0.5), 1); // within 100 ms of a 0.5 s target
  assert.ok(liveRate(0.14, 0.1) > 1, 'a 0.1 s target is kept within 25 ms');
  assert.ok(liveRate(0.07, 0.1) < 1);
  assert.equal(liveRate(0.11, 0.1), 1);
});

test('liveRate catches up at most 25 % faster and slows at most 5 %', () => {
  assert.equal(liveRate(3, 0.1), 1.25);
  assert.equal(liveRate(0.3, 0.1), 1.1);
  assert.equal(liveRate(0, 0.5), 0.95);
});

test('catchUpRate speeds hls.js up only with buffer to spend', () => {
  assert.equal(catchUpRate(0.5, 0.5, 1), 1);
  assert.equal(catchUpRate(1.5, 0.5, 1), 1.5);
  assert.equal(catchUpRate(0.9, 0.5, 1), 1.2);
  assert.equal(catchUpRate(1.5, 0.5, 0.05), 1, 'under 0.1 s ahead: no faster than 1x');
  assert.equal(catchUpRate(1.5, 0.5, 0.2), 1.1, 'never eats more than what is ahead');
  assert.equal(catchUpRate(NaN, 0.5, 1), 1);
});

test('hlsConfig takes the playlist hold-back unless a target is given', () => {
  const d = hlsConfig();
  assert.equal(d.lowLatencyMode, true);
  assert.equal(d.liveSyncDuration, undefined);
  assert.equal(d.maxLiveSyncPlaybackRate, 1);
  const t = hlsConfig(0.8);
  assert.equal(t.liveSyncDuration, 0.8);
  assert.ok(t.liveMaxLatencyDuration > t.liveSyncDuration);
});
