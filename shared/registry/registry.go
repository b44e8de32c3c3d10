// Package registry is quiccast's shared state in Redis: which origin holds
// which broadcast (qc:bcast:{name}), the log of every finished group of a
// broadcast (qc:groups:{name}) and the cluster's event stream (qc:events).
// Without a Redis URL the same code runs on an embedded, in-process
// miniredis.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/quiccast/quiccast/shared/media"
)

// ErrNotFound is returned when no node holds the broadcast.
var ErrNotFound = errors.New("registry: broadcast not found")

// ErrTaken is returned (wrapped in *TakenError with the holder) when another
// live node publishes the broadcast.
var ErrTaken = errors.New("registry: broadcast held by another origin")

// ErrClosed is returned by calls on a closed Registry.
var ErrClosed = errors.New("registry: closed")

// TakenError says which node holds a broadcast this node wanted.
type TakenError struct {
	Holder Broadcast
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("registry: broadcast %q is held by node %q (relay %s, publishing %t)",
		e.Holder.Name, e.Holder.Origin, e.Holder.Relay, e.Holder.Publishing)
}

// Unwrap returns ErrTaken.
func (e *TakenError) Unwrap() error { return ErrTaken }

// Defaults of Options.
const (
	DefaultTTL         = 5 * time.Second
	DefaultGroupLogMax = 1000
	DefaultGroupLogTTL = 10 * time.Minute
	DefaultEventsMax   = 10000
)

const (
	callTimeout = time.Second     // every command but the blocking XREAD
	blockTime   = 2 * time.Second // XREAD BLOCK of Follow
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 2 * time.Second
)

// Options configures Open. The zero value of every field but NodeID means
// its default.
type Options struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS
	// (go-redis ParseURL syntax, query options included); a Sentinel set,
	// redis-sentinel://[:password@]s1:26379,s2:26379/MASTER[?db=N&sentinel_password=P]
	// (rediss-sentinel:// for TLS); or a Redis Cluster,
	// redis-cluster://[:password@]seed1:6379,seed2:6379 (rediss-cluster://).
	// Empty runs an embedded, in-process miniredis: a single node needs no
	// Redis.
	URL string
	// TLS are the CA and client certificate files of a TLS URL.
	TLS TLSFiles
	// NodeID is this node's id, written as the holder of the broadcasts it
	// claims and as the node of its events. Required.
	NodeID string
	// TTL of qc:bcast:{name}; the holder calls Refresh more often than
	// that (every TTL/3, say). Another node may take a broadcast over once
	// its heartbeat is older than TTL/2. Default 5 s.
	TTL time.Duration
	// GroupLogMax bounds qc:groups:{name} (XADD MAXLEN ~). Default 1000.
	GroupLogMax int64
	// GroupLogTTL is the TTL of qc:groups:{name}, refreshed by every
	// LogGroup. Default 10 min.
	GroupLogTTL time.Duration
	// EventsMax bounds qc:events (XADD MAXLEN ~). Default 10000.
	EventsMax int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Registry is a node's handle on the shared state. Its methods are safe
// for concurrent use; each Redis command gives up after about a second, so
// a dead Redis never hangs a caller.
type Registry struct {
	o       Options
	mode    string // Mode…
	rdb     redis.UniversalClient
	mini    *miniredis.Miniredis // nil unless embedded
	ownMini bool                 // Close closes mini
	log     *slog.Logger
	healthy atomic.Bool

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // Follow's in-flight XREADs
}

// go-redis logs through one process-wide logger (it printed raw
// "pool.go:770: …" lines among the structured logs): its lines go to the
// logger of the registry opened last, at WARN.
var (
	clientLog       atomic.Pointer[slog.Logger]
	setClientLogger sync.Once
)

type clientLogger struct{}

func (clientLogger) Printf(_ context.Context, format string, v ...any) {
	if l := clientLog.Load(); l != nil {
		l.Warn("redis client: " + fmt.Sprintf(format, v...))
	}
}

// Open connects to the Redis of o.URL, or starts an embedded miniredis
// when o.URL is empty. It PINGs once but does not fail when Redis is down
// or refuses the credentials (it logs a warning, Healthy reports false,
// and calls succeed once Redis answers): nodes start without Redis and
// recover later. It fails only on a malformed URL or a missing NodeID.
func Open(ctx context.Context, o Options) (*Registry, error) {
	return open(ctx, o, nil)
}

// open is Open; with mini set (tests: a second node on one embedded
// store) it uses that miniredis instead of o.URL and leaves it running at
// Close.
func open(ctx context.Context, o Options, mini *miniredis.Miniredis) (*Registry, error) {
	if o.NodeID == "" {
		return nil, errors.New("registry: NodeID is required")
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.GroupLogMax <= 0 {
		o.GroupLogMax = DefaultGroupLogMax
	}
	if o.GroupLogTTL <= 0 {
		o.GroupLogTTL = DefaultGroupLogTTL
	}
	if o.EventsMax <= 0 {
		o.EventsMax = DefaultEventsMax
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	r := &Registry{o: o, log: o.Logger.With("component", "registry")}
	clientLog.Store(r.log)
	setClientLogger.Do(func() { redis.SetLogger(clientLogger{}) })

	var addr any = "embedded"
	var tg *target
	if o.URL == "" || mini != nil {
		r.mini, r.mode = mini, ModeEmbedded
		if mini == nil {
			r.mini, r.ownMini = miniredis.NewMiniRedis(), true
			r.mini.ClockTTL(true) // TTLs run on the wall clock, as in Redis
		}
		// In-memory connections (net.Pipe): no listener, no port.
		ropt := &redis.Options{Addr: "embedded", Dialer: func(context.Context, string, string) (net.Conn, error) {
			if r.isClosed() {
				return nil, ErrClosed
			}
			return r.mini.Dial()
		}}
		setDefaults(ropt)
		r.rdb = redis.NewClient(ropt)
	} else {
		var err error
		if tg, err = parseURL(o.URL, o.TLS); err != nil {
			return nil, fmt.Errorf("registry: bad Redis URL %q: %w", redactURL(o.URL), err)
		}
		r.mode, addr = tg.mode, tg.addrs
		switch {
		case tg.single != nil:
			setDefaults(tg.single)
			r.rdb = redis.NewClient(tg.single)
		case tg.failover != nil:
			setFailoverDefaults(tg.failover)
			r.rdb = redis.NewFailoverClient(tg.failover)
		default:
			setClusterDefaults(tg.cluster)
			r.rdb = redis.NewClusterClient(tg.cluster)
		}
	}

	pctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err := r.rdb.Ping(pctx).Err()
	r.note(err)
	switch {
	case err != nil:
		r.log.Warn("redis unavailable at start; carrying on, calls fail until it answers",
			"mode", r.mode, "addr", addr, "err", explain(err))
	case tg == nil:
		r.log.Info("embedded registry (no Redis URL)", "addr", addr)
	default:
		r.log.Info("redis connected", "mode", tg.mode, "addr", addr, "db", tg.db, "tls", tg.tls)
	}
	return r, nil
}

// The client's waits are bounded (unless the URL set them): commands also
// carry a context deadline, which the client honours.
const (
	maxRetries      = 1 // a connection broken by a Redis restart is retried once
	maxRetryBackoff = 100 * time.Millisecond
	dialerRetries   = 1 // callers retry; no dial loop inside one call
)

func orDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// setDefaults bounds every wait of a single-server client.
func setDefaults(o *redis.Options) {
	orDefault(&o.DialTimeout, callTimeout)
	orDefault(&o.ReadTimeout, callTimeout)
	orDefault(&o.WriteTimeout, callTimeout)
	orDefault(&o.PoolTimeout, callTimeout)
	orDefault(&o.MaxRetries, maxRetries)
	orDefault(&o.MaxRetryBackoff, maxRetryBackoff)
	orDefault(&o.DialerRetries, dialerRetries)
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true // CLIENT SETINFO needs Redis 7.2
	if o.MaintNotificationsConfig == nil {
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
}

// setFailoverDefaults is setDefaults for a Sentinel client. A command that
// meets a dead master is retried (after the client asked the sentinels
// again) within the call's deadline.
func setFailoverDefaults(o *redis.FailoverOptions) {
	orDefault(&o.DialTimeout, callTimeout/2)
	orDefault(&o.ReadTimeout, callTimeout)
	orDefault(&o.WriteTimeout, callTimeout)
	orDefault(&o.PoolTimeout, callTimeout)
	orDefault(&o.MaxRetries, 2)
	orDefault(&o.MaxRetryBackoff, maxRetryBackoff)
	orDefault(&o.DialerRetries, dialerRetries)
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true
}

// setClusterDefaults is setDefaults for a Redis Cluster client: MOVED and
// ASK are followed (MaxRedirects), and a dead master's slots are looked up
// again until a replica took them over.
func setClusterDefaults(o *redis.ClusterOptions) {
	orDefault(&o.DialTimeout, callTimeout/2)
	orDefault(&o.ReadTimeout, callTimeout)
	orDefault(&o.WriteTimeout, callTimeout)
	orDefault(&o.PoolTimeout, callTimeout)
	orDefault(&o.MaxRetryBackoff, maxRetryBackoff)
	orDefault(&o.DialerRetries, dialerRetries)
	orDefault(&o.ClusterStateReloadInterval, 10*time.Second)
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true
	if o.MaintNotificationsConfig == nil {
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
}

// Close stops Follow's reads, closes the client and, when embedded, the
// in-process Redis.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	err := r.rdb.Close() // also closes connections in use, ending a blocked XREAD
	r.wg.Wait()
	if r.ownMini {
		r.mini.Close()
	}
	r.healthy.Store(false)
	return err
}

func (r *Registry) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// NodeID is this node's id (Options.NodeID).
func (r *Registry) NodeID() string { return r.o.NodeID }

// Embedded reports whether the registry runs on the in-process miniredis.
func (r *Registry) Embedded() bool { return r.mini != nil }

// Mode is how the registry reaches Redis: ModeEmbedded, ModeSingle,
// ModeSentinel or ModeCluster.
func (r *Registry) Mode() string { return r.mode }

// Client returns the Redis client, for tests and tools.
func (r *Registry) Client() redis.UniversalClient { return r.rdb }

// Healthy reports whether the last Redis call succeeded (for /readyz and
// metrics).
func (r *Registry) Healthy() bool { return r.healthy.Load() }

// note records the health a call's outcome shows and returns err. A
// caller's cancellation says nothing about Redis.
func (r *Registry) note(err error) error {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		r.healthy.Store(true)
	case errors.Is(err, context.Canceled):
	default:
		r.healthy.Store(false)
		// go-redis reloads a cluster's slot map after MOVED, not after a
		// master stopped answering: ask again, so the slots a replica
		// took over are found within a reload (coalesced, 200 ms apart).
		if cc, ok := r.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(context.Background())
		}
	}
	return err
}

// call runs fn with the per-call timeout and records the outcome.
func (r *Registry) call(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return r.note(fn(ctx))
}

// explain adds a hint to errors whose cause is the configuration.
func explain(err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if strings.HasPrefix(s, "WRONGPASS") || strings.HasPrefix(s, "NOAUTH") || strings.Contains(s, "invalid password") {
		return fmt.Errorf("redis refused the credentials (check the password in the Redis URL): %w", err)
	}
	return err
}

// wrap gives an error the operation, the broadcast and a hint.
func wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	if name == "" {
		return fmt.Errorf("registry: %s: %w", op, explain(err))
	}
	return fmt.Errorf("registry: %s %q: %w", op, name, explain(err))
}

func checkName(name string) error {
	if err := media.ValidName(name); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// A broadcast's keys carry its name as the hash tag {name}: one hash slot
// on Redis Cluster, so a script may touch several of them.
func keyBcast(name string) string  { return bcastPrefix + "{" + name + "}" }
func keyGroups(name string) string { return "qc:groups:{" + name + "}" }

// nameOfBcastKey is the broadcast of a qc:bcast:{name} key.
func nameOfBcastKey(k string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(k, bcastPrefix), "{"), "}")
}

const keyEvents = "qc:events"

const bcastPrefix = "qc:bcast:"
