import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GroupOrderer } from '../src/order.js';
import { KIND_OBJECT, FLAG_KEYFRAME, FLAG_END_OF_GROUP } from '../src/wire.js';

/**
 * An object (or, with end, the end marker whose index is the count).
 * @param {number} group
 * @param {number} index
 * @param {boolean} [end]
 */
function obj(group, index, end = false) {
  return {
    kind: KIND_OBJECT, flags: end ? FLAG_END_OF_GROUP : index === 0 ? FLAG_KEYFRAME : 0, track: 0, index, group,
    decodeTime: group * 1000 + index, capture: 0, payload: end ? new Uint8Array(0) : new Uint8Array(100),
  };
}

/** @param {Partial<import('../src/order.js').OrdererOptions>} [opts] */
function orderer(opts = {}) {
  /** @type {string[]} */
  const out = [];
  const o = new GroupOrderer({ onObject: (x) => out.push(`${x.frame.group}/${x.frame.index}`), ...opts });
  return { o, out };
}

test('concurrent groups come out group by group, objects in index order', () => {
  const { o, out } = orderer();
  for (const f of [obj(5, 0), obj(6, 0), obj(6, 1), obj(5, 2), obj(5, 1), obj(5, 3, true), obj(6, 2), obj(6, 3, true), obj(7, 0)]) o.push(f, 1, 0);
  assert.deepEqual(out, ['5/0', '5/1', '5/2', '6/0', '6/1', '6/2', '7/0']);
  assert.equal(o.skippedGroups, 0);
  assert.equal(o.bytes, 0);
});

test('it starts at a keyframe', () => {
  const { o, out } = orderer();
  o.push(obj(5, 3), 1, 0);
  o.push(obj(5, 4), 1, 0);
  assert.deepEqual(out, []);
  o.push(obj(6, 0), 1, 0);
  o.push(obj(5, 5), 1, 0); // older than where it started: late
  assert.deepEqual(out, ['6/0']);
  assert.equal(o.lateObjects, 1);
});

test('a reset group is played as far as it came, then the next one', () => {
  const { o, out } = orderer();
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1), 1, 0);
  o.push(obj(6, 0), 1, 0);
  o.abort(5, 0);
  o.push(obj(5, 2), 1, 0); // a straggler of the reset group
  assert.deepEqual(out, ['5/0', '5/1', '6/0']);
  assert.equal(o.skippedGroups, 1);
  assert.equal(o.lateObjects, 1);
});

test('a group that never starts is skipped once two newer ones have, or a newer one completed', () => {
  const { o, out } = orderer();
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1, true), 1, 0);
  o.push(obj(7, 0), 1, 0); // 6 is late: wait for it
  assert.deepEqual(out, ['5/0']);
  o.push(obj(8, 0), 1, 0); // 6 will not come
  assert.deepEqual(out, ['5/0', '7/0']);
  assert.equal(o.skippedGroups, 1);

  const b = orderer();
  b.o.push(obj(5, 0), 1, 0);
  b.o.push(obj(5, 1, true), 1, 0);
  b.o.push(obj(7, 0), 1, 0);
  b.o.push(obj(7, 1, true), 1, 0);
  assert.deepEqual(b.out, ['5/0', '7/0']);
  assert.equal(b.o.skippedGroups, 1);
});

test('a new epoch goes on at once, its higher numbers not counted as skipped', () => {
  // An origin restarted: its first group is numbered from its clock.
  const { o, out } = orderer();
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1, true), 1, 0);
  o.push(obj(116121600, 0), 2, 0);
  assert.deepEqual(out, ['5/0', '116121600/0']);
  assert.equal(o.skippedGroups, 0);
});

test('a stalled group is left after stallMs when a newer one has started', () => {
  const { o, out } = orderer({ stallMs: 1000 });
  o.push(obj(5, 0), 1, 0);
  o.push(obj(6, 0), 1, 10); // 5 is still open
  o.tick(500);
  assert.deepEqual(out, ['5/0']);
  o.tick(1100);
  assert.deepEqual(out, ['5/0', '6/0']);
  assert.equal(o.skippedGroups, 1);
});

test('in order (WebSocket): a newer group ends the current one, skip messages jump', () => {
  const { o, out } = orderer({ inOrder: true });
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1), 1, 0);
  o.push(obj(6, 0), 1, 0); // 5 had no end marker: cut
  assert.deepEqual(out, ['5/0', '5/1', '6/0']);
  assert.equal(o.skippedGroups, 1);
  o.skipTo(9, 0); // the edge skipped 6 (cut), 7 and 8
  o.push(obj(7, 3), 1, 0);
  o.push(obj(9, 0), 1, 0);
  assert.deepEqual(out, ['5/0', '5/1', '6/0', '9/0']);
  assert.equal(o.skippedGroups, 4);
  assert.equal(o.lateObjects, 1);
  o.push(obj(9, 1), 1, 0);
  o.push(obj(9, 2, true), 1, 0);
  o.push(obj(10, 0), 1, 0);
  assert.equal(o.skippedGroups, 4, 'a complete group is not counted');
});

test('waiting objects are bounded: too many groups skip to the newest', () => {
  const { o, out } = orderer({ maxGroups: 3 });
  o.push(obj(10, 0), 1, 0); // 10/1 never comes, nor its end
  for (let g = 11; g <= 14; g++) o.push(obj(g, 0), 1, 0);
  assert.ok(o.groups.size <= 3, `${o.groups.size} groups held`);
  // At the fourth waiting group (13) it left 10 (incomplete), 11 and 12.
  assert.deepEqual(out, ['10/0', '13/0']);
  assert.equal(o.skippedGroups, 3);
  const { o: o2 } = orderer({ maxBytes: 250 });
  o2.push(obj(3, 1), 1, 0); // no keyframe: nothing starts
  o2.push(obj(3, 2), 1, 0);
  o2.push(obj(3, 3), 1, 0);
  assert.ok(o2.bytes <= 250, `${o2.bytes} bytes held`);
});

test('after a reconnect it starts at the new connection\'s first keyframe, never going back', () => {
  const { o, out } = orderer();
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1), 1, 0);
  o.reset(); // 5 was cut
  o.push(obj(4, 0), 1, 0); // older than what played
  o.push(obj(8, 0), 1, 0);
  assert.deepEqual(out, ['5/0', '5/1', '8/0']);
  assert.equal(o.skippedGroups, 3); // 5 (cut), 6, 7
});

test('duplicates are ignored', () => {
  const { o, out } = orderer();
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1), 1, 0);
  o.push(obj(5, 1), 1, 0);
  assert.deepEqual(out, ['5/0', '5/1']);
  assert.equal(o.bytes, 0);
});

test('each object carries its group\'s epoch', () => {
  /** @type {number[]} */
  const epochs = [];
  const o = new GroupOrderer({ onObject: (x) => epochs.push(x.epoch) });
  o.push(obj(5, 0), 1, 0);
  o.push(obj(5, 1, true), 1, 0);
  o.push(obj(6, 0), 2, 0);
  assert.deepEqual(epochs, [1, 2]);
});
