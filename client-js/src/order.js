// Puts one track's objects in the order MSE must get them: group by group,
// objects in index order, starting at a keyframe. Over WebTransport every
// group has its own stream, so groups arrive concurrently and out of order;
// over WebSocket they arrive in order but can be skipped. Groups that were
// reset, never complete or fall too far behind are skipped, never waited
// for forever. No DOM here, so node tests it.
import { FLAG_END_OF_GROUP } from './wire.js';

/**
 * @typedef {object} OrderedObject
 * @property {import('./wire.js').Frame} frame
 * @property {number} epoch
 */

/**
 * @typedef {object} OrdererOptions
 * @property {(o: OrderedObject) => void} onObject  called for each object in play order
 * @property {boolean} [inOrder]  the transport delivers in order (WebSocket): a newer group ends the current one
 * @property {number} [maxGroups] groups held waiting, default 8; more: skip ahead
 * @property {number} [maxBytes]  payload bytes held waiting, default 32 MiB; more: skip ahead
 * @property {number} [stallMs]   a current group that makes no progress this long while a newer one has started is skipped, default 1500
 */

/**
 * @typedef {object} PendingGroup
 * @property {number} seq
 * @property {number} epoch
 * @property {Map<number, import('./wire.js').Frame>} objects  by index, not yet handed on
 * @property {number} end     object count from the end marker, -1 until it came
 * @property {boolean} aborted the stream ended without its end marker
 */

export class GroupOrderer {
  /** @param {OrdererOptions} opts */
  constructor(opts) {
    this.onObject = opts.onObject;
    this.inOrder = !!opts.inOrder;
    this.maxGroups = opts.maxGroups || 8;
    this.maxBytes = opts.maxBytes || 32 << 20;
    this.stallMs = opts.stallMs || 1500;
    /** @type {Map<number, PendingGroup>} */ this.groups = new Map();
    this.cur = -1; // group being handed on; -1: waiting for a keyframe to start at
    this.next = 0; // its next object index
    this.floor = -1; // while cur is -1: the oldest group that may start (after a reconnect)
    this.epoch = -1; // epoch of the last object handed on
    this.bytes = 0;
    this.progressAt = 0; // when cur last moved (ms)
    // Counters.
    this.skippedGroups = 0; // groups left out (skipped, reset, incomplete)
    this.lateObjects = 0; // objects of groups already passed
    this.objects = 0; // objects handed on
  }

  /**
   * Takes an object or end-of-group marker of this track.
   * @param {import('./wire.js').Frame} f
   * @param {number} epoch
   * @param {number} [now] ms, for stall detection
   */
  push(f, epoch, now = Date.now()) {
    if (f.group < (this.cur >= 0 ? this.cur : this.floor)) {
      if (f.payload.byteLength > 0) this.lateObjects++;
      return;
    }
    if (this.inOrder && this.cur >= 0 && f.group > this.cur) {
      this.finishCurrent(); // in-order transport: the current group is over
    }
    let g = this.groups.get(f.group);
    if (!g) {
      g = { seq: f.group, epoch, objects: new Map(), end: -1, aborted: false };
      this.groups.set(f.group, g);
    }
    if (f.flags & FLAG_END_OF_GROUP) {
      g.end = f.index;
    } else if (!g.objects.has(f.index) && !(f.group === this.cur && f.index < this.next)) {
      g.objects.set(f.index, f);
      this.bytes += f.payload.byteLength;
    }
    this.drain(now);
    this.bound(now);
  }

  /**
   * A group's stream ended without its end marker (reset, cut): what
   * arrived is played, the rest will not come.
   * @param {number} seq
   * @param {number} [now]
   */
  abort(seq, now = Date.now()) {
    if (this.cur >= 0 && seq < this.cur) return;
    const g = this.groups.get(seq);
    if (g) g.aborted = true;
    else if (seq === this.cur) this.finishCurrent();
    this.drain(now);
  }

  /**
   * The server skipped this viewer ahead: groups before seq will not come.
   * @param {number} seq
   * @param {number} [now]
   */
  skipTo(seq, now = Date.now()) {
    if (this.cur >= 0 && seq <= this.cur) return;
    if (this.cur >= 0) this.jump(seq);
    for (const s of [...this.groups.keys()]) if (s < seq) this.drop(s);
    this.drain(now);
  }

  /**
   * A new connection: forget what was pending and start again at the
   * first keyframe that comes, never going back; groups missed meanwhile
   * count as skipped.
   */
  reset() {
    if (this.cur >= 0) {
      const g = this.groups.get(this.cur);
      if (this.next > 0 && !(g && g.end >= 0 && this.next >= g.end)) this.skippedGroups++;
      this.floor = this.next > 0 ? this.cur + 1 : this.cur;
    }
    for (const s of [...this.groups.keys()]) this.drop(s);
    this.cur = -1;
    this.next = 0;
  }

  /**
   * Checks for a stalled current group; call it a few times a second.
   * @param {number} [now]
   */
  tick(now = Date.now()) {
    if (this.cur < 0 || now - this.progressAt < this.stallMs) return;
    const newer = this.firstStartAfter(this.cur);
    if (newer >= 0) {
      this.jump(newer);
      this.drain(now);
    }
  }

  /** @param {number} seq */
  drop(seq) {
    const g = this.groups.get(seq);
    if (!g) return;
    for (const f of g.objects.values()) this.bytes -= f.payload.byteLength;
    this.groups.delete(seq);
  }

  /**
   * The oldest group after seq whose first object is here, or -1.
   * @param {number} seq
   */
  firstStartAfter(seq) {
    let best = -1;
    for (const g of this.groups.values()) {
      if (g.seq > seq && g.objects.has(0) && (best < 0 || g.seq < best)) best = g.seq;
    }
    return best;
  }

  /**
   * Whether g belongs to another epoch than the objects handed on so far.
   * @param {PendingGroup} g
   */
  newEpoch(g) {
    return this.epoch >= 0 && g.epoch !== this.epoch;
  }

  /**
   * Moves to group seq, counting what is left out.
   * @param {number} seq
   */
  jump(seq) {
    const cur = this.groups.get(this.cur);
    const complete = cur && cur.end >= 0 && this.next >= cur.end;
    const to = this.groups.get(seq);
    if (this.cur >= 0) this.skippedGroups += (to && this.newEpoch(to) ? 0 : seq - this.cur - 1) + (complete ? 0 : 1);
    this.drop(this.cur);
    this.cur = seq;
    this.next = 0;
    this.progressAt = Date.now();
  }

  /** Ends the current group as it is and moves to the next. */
  finishCurrent() {
    const g = this.groups.get(this.cur);
    if (!g || g.end < 0 || this.next < g.end) this.skippedGroups++;
    this.drop(this.cur);
    this.cur++;
    this.next = 0;
  }

  /** @param {number} now */
  drain(now) {
    for (;;) {
      if (this.cur < 0) {
        const start = this.firstStartAfter(this.floor - 1);
        if (start < 0) return;
        const sg = /** @type {PendingGroup} */ (this.groups.get(start));
        if (this.floor >= 0 && !this.newEpoch(sg)) this.skippedGroups += start - this.floor;
        this.cur = start;
        this.next = 0;
        this.progressAt = now;
        for (const s of [...this.groups.keys()]) if (s < start) this.drop(s);
      }
      const g = this.groups.get(this.cur);
      if (!g) {
        // The next group has not begun here. Over WebTransport its
        // stream may just be late; once a newer group has started and
        // the one after that too (or the newer one is complete), stop
        // waiting.
        const newer = this.firstStartAfter(this.cur);
        if (newer < 0) return;
        const ng = /** @type {PendingGroup} */ (this.groups.get(newer));
        // A newer epoch (the publisher or its origin started again) goes
        // on at once: its numbers start above the old ones (from the
        // origin's clock), so the numbers between never existed.
        const fresh = this.newEpoch(ng);
        if (this.inOrder || fresh || ng.end >= 0 || this.firstStartAfter(newer) >= 0) {
          if (!fresh) this.skippedGroups += newer - this.cur;
          this.cur = newer;
          this.next = 0;
          this.progressAt = now;
          continue;
        }
        return;
      }
      const f = g.objects.get(this.next);
      if (f) {
        g.objects.delete(this.next);
        this.bytes -= f.payload.byteLength;
        this.next++;
        this.objects++;
        this.progressAt = now;
        this.epoch = g.epoch;
        this.onObject({ frame: f, epoch: g.epoch });
        continue;
      }
      if ((g.end >= 0 && this.next >= g.end) || g.aborted) {
        this.finishCurrent();
        this.progressAt = now;
        continue;
      }
      return;
    }
  }

  /**
   * Keeps what waits bounded: too many groups or bytes skip ahead to the
   * newest group that has started.
   * @param {number} now
   */
  bound(now) {
    if (this.groups.size <= this.maxGroups && this.bytes <= this.maxBytes) return;
    let newest = -1;
    for (const g of this.groups.values()) if (g.objects.has(0) && g.seq > newest) newest = g.seq;
    if (newest < 0 || newest === this.cur) {
      // Nothing to skip to: drop the oldest waiting groups instead.
      const seqs = [...this.groups.keys()].sort((a, b) => a - b);
      while ((this.groups.size > this.maxGroups || this.bytes > this.maxBytes) && seqs.length > 0) {
        const s = /** @type {number} */ (seqs.shift());
        if (s !== this.cur) this.drop(s);
      }
      return;
    }
    if (this.cur >= 0) this.jump(newest);
    else this.cur = newest;
    for (const s of [...this.groups.keys()]) if (s < newest) this.drop(s);
    this.drain(now);
  }
}
