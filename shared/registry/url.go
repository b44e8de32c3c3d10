package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/quiccast/quiccast/shared/config"
)

// TLSFiles are the PEM files of a TLS Redis URL (rediss://,
// rediss-sentinel://, rediss-cluster://). All are optional: without CA the
// system's roots verify the server; Cert and Key (both or neither) are the
// client certificate of a server with tls-auth-clients.
type TLSFiles struct {
	CA   string
	Cert string
	Key  string
}

func (f TLSFiles) empty() bool { return f == TLSFiles{} }

// Modes of a Redis URL.
const (
	ModeEmbedded = "embedded" // no URL: an in-process miniredis
	ModeSingle   = "single"   // redis://, rediss://
	ModeSentinel = "sentinel" // redis-sentinel://, rediss-sentinel://
	ModeCluster  = "cluster"  // redis-cluster://, rediss-cluster://
)

// target is a parsed Redis URL: one of single, failover or cluster is set.
type target struct {
	mode     string
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
	addrs    []string // for logs: the server, sentinels or seeds
	db       int
	tls      bool
}

// parseURL turns a -redis-url into client options:
//
//	redis://[[user]:password@]host:port[/db][?go-redis options]   one server (go-redis ParseURL)
//	rediss://…                                                      the same over TLS
//	redis-sentinel://[[user]:password@]s1:26379,s2:26379/MASTER[?db=N&sentinel_username=U&sentinel_password=P]
//	rediss-sentinel://…                                             sentinels and servers over TLS
//	redis-cluster://[[user]:password@]seed1:6379,seed2:6379[?…]   Redis Cluster from seed nodes
//	rediss-cluster://…                                              over TLS
//
// The userinfo is the password of the data servers; a Sentinel set's own
// password is sentinel_password. Errors never carry a password.
func parseURL(s string, files TLSFiles) (*target, error) {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok {
		return nil, errors.New("not a URL: want redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://")
	}
	t := &target{}
	switch strings.ToLower(scheme) {
	case "redis", "rediss":
		o, err := redis.ParseURL(s)
		if err != nil {
			return nil, redactErr(err)
		}
		t.mode, t.single, t.addrs, t.db = ModeSingle, o, []string{o.Addr}, o.DB
		if o.TLSConfig != nil {
			if o.TLSConfig, err = tlsConfig(files, o.TLSConfig); err != nil {
				return nil, err
			}
		}
		t.tls = o.TLSConfig != nil
	case "redis-sentinel", "rediss-sentinel":
		p, err := splitURL(s, 26379)
		if err != nil {
			return nil, err
		}
		master := strings.Trim(p.path, "/")
		if master == "" || strings.Contains(master, "/") {
			return nil, errors.New("sentinel URL: want the master name as the path: redis-sentinel://s1:26379,s2:26379/MASTERNAME")
		}
		if master, err = url.PathUnescape(master); err != nil {
			return nil, fmt.Errorf("sentinel URL: master name: %w", err)
		}
		o := &redis.FailoverOptions{MasterName: master, SentinelAddrs: p.hosts, Username: p.user, Password: p.password}
		for k, vs := range p.query {
			v := vs[len(vs)-1]
			switch k {
			case "db":
				if o.DB, err = strconv.Atoi(v); err != nil || o.DB < 0 {
					return nil, fmt.Errorf("sentinel URL: db %q is not a database number", v)
				}
			case "sentinel_username":
				o.SentinelUsername = v
			case "sentinel_password":
				o.SentinelPassword = v
			default:
				return nil, fmt.Errorf("sentinel URL: unknown option %q (known: db, sentinel_username, sentinel_password)", k)
			}
		}
		if p.tls {
			if o.TLSConfig, err = tlsConfig(files, nil); err != nil {
				return nil, err
			}
		}
		t.mode, t.failover, t.addrs, t.db, t.tls = ModeSentinel, o, p.hosts, o.DB, p.tls
	case "redis-cluster", "rediss-cluster":
		p, err := splitURL(s, 6379)
		if err != nil {
			return nil, err
		}
		if strings.Trim(p.path, "/") != "" {
			return nil, errors.New("cluster URL: Redis Cluster has only database 0: no path after the seed addresses")
		}
		for k := range p.query {
			return nil, fmt.Errorf("cluster URL: unknown option %q (a cluster URL takes none)", k)
		}
		o := &redis.ClusterOptions{Addrs: p.hosts, Username: p.user, Password: p.password}
		if p.tls {
			if o.TLSConfig, err = tlsConfig(files, nil); err != nil {
				return nil, err
			}
		}
		t.mode, t.cluster, t.addrs, t.tls = ModeCluster, o, p.hosts, p.tls
	default:
		return nil, fmt.Errorf("unknown scheme %q: want redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://", scheme)
	}
	if !t.tls && !files.empty() {
		return nil, errors.New("TLS files (-redis-ca-file, -redis-cert-file, -redis-key-file) need a TLS URL: rediss://, rediss-sentinel:// or rediss-cluster://")
	}
	return t, nil
}

// parts of a multi-host URL.
type urlParts struct {
	tls            bool
	user, password string
	hosts          []string
	path           string
	query          url.Values
}

// splitURL splits scheme://[[user]:password@]h1[:port],h2[:port][/path][?query]
// (net/url takes one host only); a host without a port gets defPort.
func splitURL(s string, defPort int) (*urlParts, error) {
	scheme, rest, _ := strings.Cut(s, "://")
	p := &urlParts{tls: strings.HasPrefix(strings.ToLower(scheme), "rediss")}
	auth, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		auth, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		info := auth[:i]
		auth = auth[i+1:]
		user, pass, hasPass := strings.Cut(info, ":")
		var err error
		if p.user, err = url.PathUnescape(user); err != nil {
			return nil, errors.New("URL: bad escape in the user name")
		}
		if !hasPass { // redis://password@host: a lone userinfo is the password
			p.user, p.password = "", p.user
		} else if p.password, err = url.PathUnescape(pass); err != nil {
			return nil, errors.New("URL: bad escape in the password")
		}
	}
	if auth == "" {
		return nil, errors.New("URL: no host")
	}
	for _, h := range strings.Split(auth, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil { // no port
			host, port = strings.Trim(h, "[]"), strconv.Itoa(defPort)
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return nil, fmt.Errorf("URL: bad address %q: want host:port", h)
		}
		p.hosts = append(p.hosts, net.JoinHostPort(host, port))
	}
	if len(p.hosts) == 0 {
		return nil, errors.New("URL: no host")
	}
	tail, _, _ = strings.Cut(tail, "#")
	path, query, _ := strings.Cut(tail, "?")
	p.path = path
	var err error
	if p.query, err = url.ParseQuery(query); err != nil {
		return nil, errors.New("URL: bad query string")
	}
	return p, nil
}

// tlsConfig loads files into base (a copy; a new config when nil).
func tlsConfig(files TLSFiles, base *tls.Config) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		c = base.Clone()
	}
	if files.CA != "" {
		pem, err := os.ReadFile(files.CA)
		if err != nil {
			return nil, fmt.Errorf("-redis-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-redis-ca-file %s: no PEM certificate in it", files.CA)
		}
		c.RootCAs = pool
	}
	switch {
	case files.Cert != "" && files.Key != "":
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			return nil, fmt.Errorf("-redis-cert-file/-redis-key-file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case files.Cert != "" || files.Key != "":
		return nil, errors.New("-redis-cert-file and -redis-key-file go together")
	}
	return c, nil
}

// redactURL hides the passwords of a Redis URL (userinfo and any query
// option whose name says password), for messages and logs.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			return "xxxxx" + s[i:]
		}
		return s
	}
	auth, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		auth, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		user, _, hasPass := strings.Cut(auth[:i], ":")
		if hasPass {
			auth = user + ":xxxxx" + auth[i:]
		} else {
			auth = "xxxxx" + auth[i:]
		}
	}
	path, query, hasQuery := strings.Cut(tail, "?")
	if hasQuery {
		kvs := strings.Split(query, "&")
		for i, kv := range kvs {
			k, _, _ := strings.Cut(kv, "=")
			if lk, err := url.QueryUnescape(k); err == nil && strings.Contains(strings.ToLower(lk), "password") ||
				strings.Contains(strings.ToLower(k), "password") {
				kvs[i] = k + "=xxxxx"
			}
		}
		path += "?" + strings.Join(kvs, "&")
	}
	return scheme + "://" + auth + path
}

// redactErr drops the URL that url.Parse puts into its errors.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// URLUsage is the help text of -redis-url.
const URLUsage = "registry: redis://[:password@]host:port/db, rediss:// for TLS, " +
	"redis-sentinel://[:password@]s1:26379,s2:26379/MASTER[?db=N&sentinel_password=P] (rediss-sentinel:// for TLS) " +
	"or redis-cluster://[:password@]seed1:6379,seed2:6379 (rediss-cluster://)"

// Flags declares the TLS files as -redis-ca-file, -redis-cert-file and
// -redis-key-file, shared by all nodes (QC_REDIS_CA_FILE, …).
func (f *TLSFiles) Flags(s *config.Set) {
	s.GlobalString(&f.CA, "redis-ca-file", "", "PEM CA that signs the Redis servers' certificates (TLS URLs); default: the system's roots")
	s.GlobalString(&f.Cert, "redis-cert-file", "", "PEM client certificate for Redis servers that require one (tls-auth-clients), with -redis-key-file")
	s.GlobalString(&f.Key, "redis-key-file", "", "PEM private key of -redis-cert-file")
}
