package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Broadcast is the qc:bcast:{name} hash: who holds a broadcast and where
// edges reach it.
type Broadcast struct {
	// Name of the broadcast ([A-Za-z0-9._-] segments joined by '/').
	Name string
	// Origin is the id of the node that holds it.
	Origin string
	// Relay is the host:port edges dial for it.
	Relay string
	// Incarnation is the run of the holder's process (its relay's
	// HELLO_OK says the same): a holder restarted on the same relay
	// address has another one, and edges drop connections to the old.
	Incarnation string
	// Epoch rises with each publisher session of the broadcast.
	Epoch uint64
	// Started is when the broadcast started (zero in Claim: now).
	Started time.Time
	// Publishing is true while a publisher sends media.
	Publishing bool
	// Heartbeat is the holder's last Claim, Refresh or SetPublishing, by the
	// Redis server's clock (ignored in Claim and Refresh).
	Heartbeat time.Time
	// Catalog is the broadcast's catalog (JSON), nil if none.
	Catalog json.RawMessage
}

// Lua scripts keep every read-check-write atomic. Timestamps come from the
// Redis server's clock (TIME), one clock for every node. Unix ms are built
// as strings: Lua numbers would print 13 digits in exponent form.
const luaNow = `
local t = redis.call('TIME')
local now_s = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local now = tonumber(now_s)
local function field(h, k)
  for i = 1, #h, 2 do
    if h[i] == k then return h[i + 1] end
  end
  return false
end
`

// The scripts touch one broadcast's keys only, which share a hash slot
// ({name}), so they run unchanged on Redis Cluster. The event a change
// makes goes to qc:events (another slot) right after, outside the script:
// best effort. If that write fails the change stands and the event is
// lost; Follow's resync after a Redis error, the TTL of the keys and the
// relay's own HELLO (incarnation) make followers find out anyway.

// claimScript: KEYS bcast; ARGV node, relay, epoch, started (0 = now),
// publishing, catalog, ttl ms, fresh ms, force, incarnation.
// Returns {"taken"|"started"|"moved", previous hash as a flat list, now}.
var claimScript = redis.NewScript(luaNow + `
local prev = redis.call('HGETALL', KEYS[1])
local holder = field(prev, 'origin')
if holder and holder ~= ARGV[1] and ARGV[9] ~= '1' then
  local hb = tonumber(field(prev, 'heartbeat') or '0') or 0
  if field(prev, 'publishing') == '1' and now - hb < tonumber(ARGV[8]) then
    return {'taken', prev, now_s}
  end
end
local started = ARGV[4]
if started == '0' then started = now_s end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'origin', ARGV[1], 'relay', ARGV[2], 'epoch', ARGV[3],
  'started', started, 'publishing', ARGV[5], 'heartbeat', now_s, 'catalog', ARGV[6], 'incarnation', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local typ = 'started'
if holder and holder ~= ARGV[1] then typ = 'moved' end
return {typ, prev, now_s}
`)

// refreshScript: KEYS bcast; ARGV node, ttl ms, relay, epoch, started,
// publishing, catalog, incarnation. Returns {"ok"|"lost"|"recreated", now}.
var refreshScript = redis.NewScript(luaNow + `
local holder = redis.call('HGET', KEYS[1], 'origin')
if not holder then
  redis.call('HSET', KEYS[1], 'origin', ARGV[1], 'relay', ARGV[3], 'epoch', ARGV[4],
    'started', ARGV[5], 'publishing', ARGV[6], 'heartbeat', now_s, 'catalog', ARGV[7],
    'incarnation', ARGV[8])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'recreated', now_s}
elseif holder == ARGV[1] then
  redis.call('HSET', KEYS[1], 'heartbeat', now_s)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'ok', now_s}
end
return {'lost', now_s}
`)

// publishingScript: KEYS bcast; ARGV node, publishing, set catalog (1/0),
// catalog, ttl ms. Returns {"ok"} | {"missing"} | {"taken", hash}.
var publishingScript = redis.NewScript(luaNow + `
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {'missing'} end
if field(h, 'origin') ~= ARGV[1] then return {'taken', h} end
redis.call('HSET', KEYS[1], 'publishing', ARGV[2], 'heartbeat', now_s)
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'catalog', ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok'}
`)

// releaseScript: KEYS bcast, groups (one slot); ARGV node.
// Returns {"ended", hash, now} | {"taken", hash}.
var releaseScript = redis.NewScript(luaNow + `
local h = redis.call('HGETALL', KEYS[1])
local holder = field(h, 'origin')
if holder and holder ~= ARGV[1] then return {'taken', h} end
redis.call('DEL', KEYS[1], KEYS[2])
return {'ended', h, now_s}
`)

// Claim makes this node (Options.NodeID) the holder of b.Name, atomically
// (one Lua script). If another node holds it, is publishing and has a
// fresh heartbeat (younger than TTL/2), Claim returns a *TakenError unless
// force is true (the caller has checked that the holder is dead).
// Otherwise it writes the hash with its TTL and adds a "started" event, or
// "moved" when another node held it. It returns the previous holder, if
// any. b.Origin and b.Heartbeat are ignored; a zero b.Started means now.
func (r *Registry) Claim(ctx context.Context, b Broadcast, force bool) (prev *Broadcast, err error) {
	if err := checkName(b.Name); err != nil {
		return nil, err
	}
	if len(b.Catalog) > 0 && !json.Valid(b.Catalog) {
		return nil, fmt.Errorf("registry: claim %q: catalog is not valid JSON", b.Name)
	}
	var res []any
	err = r.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = claimScript.Run(ctx, r.rdb, []string{keyBcast(b.Name)},
			r.o.NodeID, b.Relay, b.Epoch, unixMs(b.Started), flag(b.Publishing), string(b.Catalog),
			r.o.TTL.Milliseconds(), (r.o.TTL / 2).Milliseconds(), flag(force), b.Incarnation,
		).Slice()
		return err
	})
	if err != nil {
		return nil, wrap("claim", b.Name, err)
	}
	typ, h, err := scriptReply(res)
	if err != nil {
		return nil, wrap("claim", b.Name, err)
	}
	if len(h) > 0 {
		p := parseBroadcast(b.Name, h)
		prev = &p
	}
	if typ == "taken" {
		return prev, &TakenError{Holder: *prev}
	}
	if typ == EventMoved {
		r.log.Info("broadcast moved here", "broadcast", b.Name, "from", prev.Origin, "epoch", b.Epoch)
	}
	r.addEvent(ctx, Event{Type: typ, Broadcast: b.Name, Node: r.o.NodeID, Relay: b.Relay, Epoch: b.Epoch,
		Incarnation: b.Incarnation, Time: scriptTime(res)})
	return prev, nil
}

// Refresh is the heartbeat: for each broadcast this node holds it sets the
// heartbeat and the TTL again. A key that vanished (it expired, or Redis
// restarted without persistence) is written again from held, with a
// "started" event. A key another node now holds is left alone and its name
// returned in lost. One pipeline (a round trip per Redis Cluster shard).
func (r *Registry) Refresh(ctx context.Context, held []Broadcast) (lost []string, err error) {
	if len(held) == 0 {
		return nil, nil
	}
	for _, b := range held {
		if err := checkName(b.Name); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	cmds := make([]*redis.Cmd, len(held))
	run := func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, b := range held {
				started := b.Started
				if started.IsZero() {
					started = now
				}
				cmds[i] = refreshScript.EvalSha(ctx, p, []string{keyBcast(b.Name)}, r.o.NodeID, r.o.TTL.Milliseconds(),
					b.Relay, b.Epoch, unixMs(started), flag(b.Publishing), string(b.Catalog), b.Incarnation)
			}
			return nil
		})
		return err
	}
	err = r.call(ctx, func(ctx context.Context) error {
		err := run(ctx)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// One pipeline, one round trip per shard: load the script
			// (on every shard) and go again.
			if err = refreshScript.Load(ctx, r.rdb).Err(); err == nil {
				err = run(ctx)
			}
		}
		return err
	})
	if err != nil {
		return nil, wrap("refresh", "", err)
	}
	var recreated []string
	for i, b := range held {
		res, err := cmds[i].Slice()
		if err != nil || len(res) == 0 {
			return nil, fmt.Errorf("registry: refresh: unexpected reply %v (%v)", res, err)
		}
		switch res[0] {
		case "lost":
			lost = append(lost, b.Name)
		case "recreated":
			recreated = append(recreated, b.Name)
			r.addEvent(ctx, Event{Type: EventStarted, Broadcast: b.Name, Node: r.o.NodeID, Relay: b.Relay,
				Epoch: b.Epoch, Incarnation: b.Incarnation, Time: scriptTime(res)})
		}
	}
	if len(recreated) > 0 {
		r.log.Warn("broadcast keys had vanished from Redis; written again", "broadcasts", recreated)
	}
	if len(lost) > 0 {
		r.log.Warn("broadcasts now held by another node", "broadcasts", lost)
	}
	return lost, nil
}

// SetPublishing sets the publishing flag, and the catalog if catalog is not
// nil, of a broadcast this node holds (and refreshes its heartbeat). It
// returns ErrNotFound when nobody holds name and a *TakenError when
// another node does.
func (r *Registry) SetPublishing(ctx context.Context, name string, publishing bool, catalog json.RawMessage) error {
	if err := checkName(name); err != nil {
		return err
	}
	if catalog != nil && len(catalog) > 0 && !json.Valid(catalog) {
		return fmt.Errorf("registry: set publishing %q: catalog is not valid JSON", name)
	}
	setCat := "0"
	if catalog != nil {
		setCat = "1"
	}
	var res []any
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = publishingScript.Run(ctx, r.rdb, []string{keyBcast(name)},
			r.o.NodeID, flag(publishing), setCat, string(catalog), r.o.TTL.Milliseconds()).Slice()
		return err
	})
	if err != nil {
		return wrap("set publishing", name, err)
	}
	typ, h, err := scriptReply(res)
	switch {
	case err != nil:
		return wrap("set publishing", name, err)
	case typ == "missing":
		return fmt.Errorf("registry: set publishing %q: %w", name, ErrNotFound)
	case typ == "taken":
		return &TakenError{Holder: parseBroadcast(name, h)}
	}
	return nil
}

// Release ends a broadcast this node holds: it deletes qc:bcast:{name} and
// qc:groups:{name} and adds an "ended" event. A broadcast nobody holds any
// more is released all the same; one another node holds is left alone and
// Release returns a *TakenError.
func (r *Registry) Release(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	var res []any
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = releaseScript.Run(ctx, r.rdb, []string{keyBcast(name), keyGroups(name)}, r.o.NodeID).Slice()
		return err
	})
	if err != nil {
		return wrap("release", name, err)
	}
	typ, h, err := scriptReply(res)
	if err != nil {
		return wrap("release", name, err)
	}
	hb := parseBroadcast(name, h)
	if typ == "taken" {
		return &TakenError{Holder: hb}
	}
	r.addEvent(ctx, Event{Type: EventEnded, Broadcast: name, Node: r.o.NodeID, Relay: hb.Relay, Epoch: hb.Epoch,
		Incarnation: hb.Incarnation, Time: scriptTime(res)})
	return nil
}

// Lookup returns who holds name, or ErrNotFound.
func (r *Registry) Lookup(ctx context.Context, name string) (*Broadcast, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var h map[string]string
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		h, err = r.rdb.HGetAll(ctx, keyBcast(name)).Result()
		return err
	})
	if err != nil {
		return nil, wrap("lookup", name, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("registry: lookup %q: %w", name, ErrNotFound)
	}
	b := parseBroadcastMap(name, h)
	return &b, nil
}

// List returns every broadcast some node holds, sorted by name (SCAN of
// qc:bcast:*, for a control API; not for a hot path).
func (r *Registry) List(ctx context.Context) ([]Broadcast, error) {
	var keys []string
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		keys, err = r.scan(ctx, bcastPrefix+"{*}")
		return err
	})
	if err != nil {
		return nil, wrap("list", "", err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	err = r.call(ctx, func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGetAll(ctx, k)
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, wrap("list", "", err)
	}
	seen := make(map[string]bool, len(keys))
	out := make([]Broadcast, 0, len(keys))
	for i, k := range keys {
		name := nameOfBcastKey(k)
		if h := cmds[i].Val(); len(h) > 0 && !seen[name] { // expired meanwhile; SCAN may repeat keys
			seen[name] = true
			out = append(out, parseBroadcastMap(name, h))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// scan returns the keys matching pattern: on Redis Cluster, of every
// master.
func (r *Registry) scan(ctx context.Context, pattern string) ([]string, error) {
	var mu sync.Mutex
	var keys []string
	one := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			ks, next, err := c.Scan(ctx, cursor, pattern, 500).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			keys = append(keys, ks...)
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return one(ctx, c) })
		return keys, err
	}
	return keys, one(ctx, r.rdb)
}

// scriptTime is the Redis clock (Unix ms) a script returned last.
func scriptTime(res []any) time.Time {
	if len(res) == 0 {
		return time.Now()
	}
	s, _ := res[len(res)-1].(string)
	if t := fromUnixMs(s); !t.IsZero() {
		return t
	}
	return time.Now()
}

// scriptReply splits a script's {type, flat hash} reply.
func scriptReply(res []any) (typ string, h []string, err error) {
	if len(res) == 0 {
		return "", nil, errors.New("empty script reply")
	}
	typ, ok := res[0].(string)
	if !ok {
		return "", nil, fmt.Errorf("unexpected script reply %v", res)
	}
	if len(res) > 1 {
		h = strs(res[1])
	}
	return typ, h, nil
}

// strs converts a reply array of strings.
func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func parseBroadcast(name string, flat []string) Broadcast {
	h := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		h[flat[i]] = flat[i+1]
	}
	return parseBroadcastMap(name, h)
}

func parseBroadcastMap(name string, h map[string]string) Broadcast {
	b := Broadcast{
		Name:        name,
		Origin:      h["origin"],
		Relay:       h["relay"],
		Incarnation: h["incarnation"],
		Epoch:       parseUint(h["epoch"]),
		Started:     fromUnixMs(h["started"]),
		Publishing:  h["publishing"] == "1",
		Heartbeat:   fromUnixMs(h["heartbeat"]),
	}
	if c := h["catalog"]; c != "" {
		b.Catalog = json.RawMessage(c)
	}
	return b
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMs(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

func parseInt(s string) int64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return v
}
