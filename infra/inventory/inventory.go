// Package inventory reads the file that describes a quiccast cluster: its
// hosts, how to reach them over SSH, their roles, and where the secrets
// are (environment variables or files, never the file itself).
package inventory

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// Roles a host can have, any combination.
const (
	Redis  = "redis"
	Origin = "origin"
	Edge   = "edge"
)

var roles = []string{Redis, Origin, Edge}

// Inventory is the whole file.
type Inventory struct {
	Cluster Cluster `yaml:"cluster"`
	SSH     SSH     `yaml:"ssh"`
	Hosts   []*Host `yaml:"hosts"`

	dir string // of the file, for relative paths
}

// Cluster holds settings every node shares.
type Cluster struct {
	// ClusterToken, PublishTokens, PlayTokens and RedisPassword are
	// references: "env:NAME" or "file:PATH" (relative to the inventory).
	ClusterToken  string `yaml:"cluster_token"`
	PublishTokens string `yaml:"publish_tokens"`
	PlayTokens    string `yaml:"play_tokens"`
	RedisPassword string `yaml:"redis_password"`
	ACME          ACME   `yaml:"acme"`
	// MaxViewers per edge; LimitNOFILE is sized from it.
	MaxViewers int `yaml:"max_viewers"`
}

// ACME configures certificates for edges with a DNS name.
type ACME struct {
	// Enabled turns ACME on for every edge with a dns name (default true).
	Enabled *bool  `yaml:"enabled"`
	Email   string `yaml:"email"`
	// CA is the directory URL; default Let's Encrypt production.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of the CA's root to trust (test CAs only).
	CARoot string `yaml:"ca_root"`
}

// On reports whether ACME is enabled.
func (a ACME) On() bool { return a.Enabled == nil || *a.Enabled }

// SSH says how to authenticate.
type SSH struct {
	// KnownHosts is the known_hosts file checked for every host;
	// default ~/.ssh/known_hosts.
	KnownHosts string `yaml:"known_hosts"`
	// Key is a private key file; default: the agent (SSH_AUTH_SOCK),
	// then ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa.
	Key string `yaml:"key"`
	// AuthorizedKeys are public key files (e.g. ~/.ssh/id_ed25519.pub)
	// that cloud-init authorizes on new hosts.
	AuthorizedKeys []string `yaml:"authorized_keys"`
}

// Host is one VM.
type Host struct {
	Name string `yaml:"name"`
	// SSH is host or host:port.
	SSH  string `yaml:"ssh"`
	User string `yaml:"user"`
	// Private is the address other nodes reach this one on (Redis binds
	// it; origins advertise their relay on it). Default: SSH's host.
	Private string   `yaml:"private"`
	Roles   []string `yaml:"roles"`
	// DNS is the public name of an edge (its certificate and URLs).
	DNS string `yaml:"dns"`
	// Region labels the host; Parent names the edge (mid tier) this edge
	// pulls from when the registry has no origin for a broadcast.
	Region string `yaml:"region"`
	Parent string `yaml:"parent"`
	// Arch is amd64 or arm64; default: asked with uname -m.
	Arch  string `yaml:"arch"`
	Ports Ports  `yaml:"ports"`
}

// Ports of a host's services; zero takes the default.
type Ports struct {
	Redis       int `yaml:"redis"`        // 6379
	OriginHTTP  int `yaml:"origin_http"`  // 7000
	OriginRelay int `yaml:"origin_relay"` // 7001 (UDP)
	RTMP        int `yaml:"rtmp"`         // 1935
	EdgeHTTP    int `yaml:"edge_http"`    // 443 with a certificate, else 8080 (TCP and UDP)
	EdgeRelay   int `yaml:"edge_relay"`   // 7002 (UDP), for edges that are a parent
}

// Has reports whether h has role r.
func (h *Host) Has(r string) bool { return slices.Contains(h.Roles, r) }

// Addr returns the SSH address as host:port.
func (h *Host) Addr() string {
	if _, _, err := net.SplitHostPort(h.SSH); err == nil {
		return h.SSH
	}
	return net.JoinHostPort(h.SSH, "22")
}

// Load reads and validates an inventory file. Every problem is reported
// before anything is touched.
func Load(path string) (*Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	inv, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", path, err)
	}
	inv.dir = filepath.Dir(path)
	return inv, nil
}

// Parse reads an inventory from YAML and validates it; unknown keys are
// errors (a typo must not silently drop a setting).
func Parse(b []byte) (*Inventory, error) {
	var inv Inventory
	if err := yaml.UnmarshalWithOptions(b, &inv, yaml.Strict()); err != nil {
		return nil, errors.New(yaml.FormatError(err, false, true))
	}
	inv.defaults()
	if err := inv.validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

func (inv *Inventory) defaults() {
	if inv.Cluster.MaxViewers == 0 {
		inv.Cluster.MaxViewers = 19000
	}
	for _, h := range inv.Hosts {
		if h.User == "" {
			h.User = "root"
		}
		if h.Private == "" {
			host, _, err := net.SplitHostPort(h.Addr())
			if err == nil {
				h.Private = host
			}
		}
		p := &h.Ports
		def := func(v *int, d int) {
			if *v == 0 {
				*v = d
			}
		}
		def(&p.Redis, 6379)
		def(&p.OriginHTTP, 7000)
		def(&p.OriginRelay, 7001)
		def(&p.RTMP, 1935)
		def(&p.EdgeRelay, 7002)
		if h.TLS(inv) {
			def(&p.EdgeHTTP, 443)
		} else {
			def(&p.EdgeHTTP, 8080)
		}
	}
}

// TLS reports whether h's edge gets an ACME certificate.
func (h *Host) TLS(inv *Inventory) bool { return h.Has(Edge) && h.DNS != "" && inv.Cluster.ACME.On() }

func (inv *Inventory) validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if len(inv.Hosts) == 0 {
		bad("no hosts")
	}
	names := map[string]*Host{}
	var nRedis, nOrigin int
	for i, h := range inv.Hosts {
		if h.Name == "" {
			bad("host %d: no name", i+1)
			continue
		}
		if names[h.Name] != nil {
			bad("host %s: named twice", h.Name)
		}
		names[h.Name] = h
		if h.SSH == "" {
			bad("host %s: no ssh address", h.Name)
		} else if _, port, err := net.SplitHostPort(h.Addr()); err != nil {
			bad("host %s: ssh %q: %v", h.Name, h.SSH, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad("host %s: ssh port %q", h.Name, port)
		}
		if len(h.Roles) == 0 {
			bad("host %s: no roles (want any of %s)", h.Name, strings.Join(roles, ", "))
		}
		for _, r := range h.Roles {
			if !slices.Contains(roles, r) {
				bad("host %s: unknown role %q (want any of %s)", h.Name, r, strings.Join(roles, ", "))
			}
		}
		if h.Has(Redis) {
			nRedis++
		}
		if h.Has(Origin) {
			nOrigin++
		}
		if h.Has(Edge) && h.DNS == "" && inv.Cluster.ACME.On() {
			bad("host %s: an edge needs a dns name while acme is on (set dns, or acme.enabled: false for plain HTTP)", h.Name)
		}
		if h.DNS != "" && !h.Has(Edge) {
			bad("host %s: dns is for edges", h.Name)
		}
		switch h.Arch {
		case "", "amd64", "arm64":
		default:
			bad("host %s: arch %q: want amd64 or arm64", h.Name, h.Arch)
		}
	}
	for _, h := range inv.Hosts {
		if h.Parent == "" {
			continue
		}
		p := names[h.Parent]
		switch {
		case !h.Has(Edge):
			bad("host %s: parent is for edges", h.Name)
		case p == nil:
			bad("host %s: parent %q is not a host", h.Name, h.Parent)
		case !p.Has(Edge) && !p.Has(Origin):
			bad("host %s: parent %q is neither an edge nor an origin", h.Name, h.Parent)
		case p == h:
			bad("host %s: is its own parent", h.Name)
		}
	}
	if nRedis > 1 {
		bad("%d hosts have role redis; one is supported", nRedis)
	}
	if nOrigin > 1 && nRedis == 0 {
		bad("several origins need a redis host (the registry)")
	}
	for _, ref := range []struct{ name, v string }{
		{"cluster_token", inv.Cluster.ClusterToken}, {"publish_tokens", inv.Cluster.PublishTokens},
		{"play_tokens", inv.Cluster.PlayTokens}, {"redis_password", inv.Cluster.RedisPassword},
	} {
		if ref.v != "" && !strings.HasPrefix(ref.v, "env:") && !strings.HasPrefix(ref.v, "file:") {
			bad("cluster.%s: want env:NAME or file:PATH, never the secret itself", ref.name)
		}
	}
	if nRedis > 0 && inv.Cluster.RedisPassword == "" {
		bad("cluster.redis_password: required with a redis host (env:NAME or file:PATH)")
	}
	return errors.Join(errs...)
}

// Host returns the host named name, or nil.
func (inv *Inventory) Host(name string) *Host {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// First returns the first host with role r, or nil.
func (inv *Inventory) First(r string) *Host {
	for _, h := range inv.Hosts {
		if h.Has(r) {
			return h
		}
	}
	return nil
}

// IsParent reports whether some edge names h as its parent.
func (inv *Inventory) IsParent(h *Host) bool {
	for _, o := range inv.Hosts {
		if o.Parent == h.Name {
			return true
		}
	}
	return false
}

// Select returns the hosts named in names (comma-separated; empty: all)
// that have role (empty: any), in inventory order. An unknown name or role
// is an error.
func (inv *Inventory) Select(names, role string) ([]*Host, error) {
	var want []string
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			if inv.Host(n) == nil {
				return nil, fmt.Errorf("HOSTS: no host %q in the inventory", n)
			}
			want = append(want, n)
		}
	}
	if role != "" && !slices.Contains(roles, role) {
		return nil, fmt.Errorf("ROLE: unknown role %q (want any of %s)", role, strings.Join(roles, ", "))
	}
	var out []*Host
	for _, h := range inv.Hosts {
		if (len(want) == 0 || slices.Contains(want, h.Name)) && (role == "" || h.Has(role)) {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no host matches HOSTS and ROLE")
	}
	return out, nil
}

// Secrets are the resolved values of the cluster's references.
type Secrets struct {
	ClusterToken, PublishTokens, PlayTokens, RedisPassword string
}

// Resolve reads every secret reference; a missing variable or file is
// an error naming it.
func (inv *Inventory) Resolve() (Secrets, error) {
	var s Secrets
	var errs []error
	for _, r := range []struct {
		name string
		ref  string
		dst  *string
	}{
		{"cluster_token", inv.Cluster.ClusterToken, &s.ClusterToken},
		{"publish_tokens", inv.Cluster.PublishTokens, &s.PublishTokens},
		{"play_tokens", inv.Cluster.PlayTokens, &s.PlayTokens},
		{"redis_password", inv.Cluster.RedisPassword, &s.RedisPassword},
	} {
		v, err := inv.secret(r.ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster.%s: %w", r.name, err))
		}
		if strings.ContainsAny(v, "\n\r") {
			errs = append(errs, fmt.Errorf("cluster.%s: the secret holds a line break", r.name))
		}
		*r.dst = v
	}
	return s, errors.Join(errs...)
}

func (inv *Inventory) secret(ref string) (string, error) {
	switch {
	case ref == "":
		return "", nil
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(inv.Path(strings.TrimPrefix(ref, "file:")))
		if err != nil {
			return "", err
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s is empty", strings.TrimPrefix(ref, "file:"))
		}
		return v, nil
	}
	return "", fmt.Errorf("want env:NAME or file:PATH")
}

// Path resolves p: ~/ is the home directory, a relative path is relative
// to the inventory file.
func (inv *Inventory) Path(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, rest)
	}
	if filepath.IsAbs(p) || inv.dir == "" {
		return p
	}
	return filepath.Join(inv.dir, p)
}
