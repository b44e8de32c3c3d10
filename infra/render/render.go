// Package render makes the files a host gets from the inventory: systemd
// units with sandboxing, /etc/quiccast/*.env (secrets, mode 0600), the
// UDP buffer sysctls quic-go wants, and Redis's settings.
package render

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/quiccast/quiccast/infra/inventory"
)

// Paths on every host.
const (
	Binary   = "/usr/local/bin/quiccast"
	Previous = "/usr/local/bin/quiccast.previous"
	EnvDir   = "/etc/quiccast"
	// PreviousDir keeps (root only) the env and unit files a deploy
	// replaced, so that a node that does not come back gets them back
	// with its previous binary.
	PreviousDir = EnvDir + "/previous"
	StateDir    = "/var/lib/quiccast"
	User        = "quiccast"
	Sysctl      = "/etc/sysctl.d/60-quiccast.conf"
	RedisInc    = "/etc/redis/quiccast.conf"
	RedisCnf    = "/etc/redis/redis.conf"
)

// UDPBuffer is the receive and send buffer size quic-go asks for (7 MiB,
// plus room).
const UDPBuffer = 7_500_000

// File is one file to put on a host.
type File struct {
	Path    string
	Mode    uint32
	Owner   string // "user:group"; root:root when empty
	Content []byte
}

// Unit returns the systemd unit name of a quiccast role.
func Unit(role string) string { return "quiccast-" + role + ".service" }

// Host returns every file h gets, in a fixed order.
func Host(inv *inventory.Inventory, h *inventory.Host, s inventory.Secrets) ([]File, error) {
	var out []File
	add := func(path string, mode uint32, owner string, content string) {
		out = append(out, File{Path: path, Mode: mode, Owner: owner, Content: []byte(content)})
	}
	if h.Has(inventory.Redis) {
		add(RedisInc, 0o640, "root:redis", redisConf(h, s))
	}
	if h.Has(inventory.Origin) || h.Has(inventory.Edge) {
		add(Sysctl, 0o644, "", sysctl())
	}
	for _, role := range []string{inventory.Origin, inventory.Edge} {
		if !h.Has(role) {
			continue
		}
		env, err := Env(inv, h, role, s)
		if err != nil {
			return nil, err
		}
		add(EnvDir+"/"+role+".env", 0o600, "", env)
		if role == inventory.Edge && h.TLS(inv) && inv.Cluster.ACME.CARoot != "" {
			pem, err := os.ReadFile(inv.Path(inv.Cluster.ACME.CARoot))
			if err != nil {
				return nil, fmt.Errorf("acme.ca_root: %w", err)
			}
			add(EnvDir+"/acme-ca-root.pem", 0o644, "", string(pem))
		}
		u, err := UnitFile(inv, role)
		if err != nil {
			return nil, err
		}
		add("/etc/systemd/system/"+Unit(role), 0o644, "", u)
	}
	return out, nil
}

func sysctl() string {
	return fmt.Sprintf("# quiccast: UDP buffers for QUIC (quic-go wants 7 MiB)\nnet.core.rmem_max = %d\nnet.core.wmem_max = %d\n", UDPBuffer, UDPBuffer)
}

func redisConf(h *inventory.Host, s inventory.Secrets) string {
	binds := h.Private
	if binds != "127.0.0.1" {
		binds += " 127.0.0.1"
	}
	return fmt.Sprintf("# quiccast: written by task deploy; included from %s\nbind %s\nport %d\nprotected-mode yes\nrequirepass \"%s\"\n", RedisCnf, binds, h.Ports.Redis, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s.RedisPassword))
}

// RedisURL is the registry URL nodes use, or "" without a redis host.
func RedisURL(inv *inventory.Inventory, s inventory.Secrets) string {
	r := inv.First(inventory.Redis)
	if r == nil {
		return ""
	}
	u := url.URL{Scheme: "redis", Host: net.JoinHostPort(r.Private, strconv.Itoa(r.Ports.Redis)), Path: "/0"}
	if s.RedisPassword != "" {
		u.User = url.UserPassword("", s.RedisPassword)
	}
	return u.String()
}

// Env returns the environment file of role on h: every setting as the
// QC_… twin of its flag.
func Env(inv *inventory.Inventory, h *inventory.Host, role string, s inventory.Secrets) (string, error) {
	v := map[string]string{
		"QC_NODE_ID":    h.Name + "-" + role,
		"QC_LOG_FORMAT": "json",
	}
	set := func(k, val string) {
		if val != "" {
			v[k] = val
		}
	}
	set("QC_REDIS_URL", RedisURL(inv, s))
	set("QC_CLUSTER_TOKEN", s.ClusterToken)
	switch role {
	case inventory.Origin:
		v["QC_ORIGIN_LISTEN"] = ":" + strconv.Itoa(h.Ports.OriginHTTP)
		v["QC_ORIGIN_RELAY_LISTEN"] = ":" + strconv.Itoa(h.Ports.OriginRelay)
		v["QC_ORIGIN_RELAY_ADVERTISE"] = net.JoinHostPort(h.Private, strconv.Itoa(h.Ports.OriginRelay))
		v["QC_ORIGIN_RTMP_LISTEN"] = ":" + strconv.Itoa(h.Ports.RTMP)
		set("QC_ORIGIN_PUBLISH_TOKENS", s.PublishTokens)
	case inventory.Edge:
		v["QC_EDGE_LISTEN"] = ":" + strconv.Itoa(h.Ports.EdgeHTTP)
		v["QC_EDGE_WT_LISTEN"] = "same"
		v["QC_EDGE_MAX_VIEWERS"] = strconv.Itoa(inv.Cluster.MaxViewers)
		set("QC_EDGE_PLAY_TOKENS", s.PlayTokens)
		if inv.IsParent(h) {
			v["QC_EDGE_RELAY_LISTEN"] = ":" + strconv.Itoa(h.Ports.EdgeRelay)
		}
		if h.Parent != "" {
			p := inv.Host(h.Parent)
			port := p.Ports.EdgeRelay
			if !p.Has(inventory.Edge) {
				port = p.Ports.OriginRelay
			}
			v["QC_EDGE_PARENT"] = net.JoinHostPort(p.Private, strconv.Itoa(port))
		} else if o := inv.First(inventory.Origin); o != nil && RedisURL(inv, s) == "" {
			v["QC_EDGE_PARENT"] = net.JoinHostPort(o.Private, strconv.Itoa(o.Ports.OriginRelay))
		}
		if h.TLS(inv) {
			a := inv.Cluster.ACME
			v["QC_EDGE_ACME_DOMAIN"] = h.DNS
			v["QC_EDGE_ACME_DIR"] = StateDir + "/acme"
			set("QC_EDGE_ACME_EMAIL", a.Email)
			set("QC_EDGE_ACME_CA", a.CA)
			if a.CARoot != "" {
				v["QC_EDGE_ACME_CA_ROOT"] = EnvDir + "/acme-ca-root.pem"
			}
		}
	default:
		return "", fmt.Errorf("render: no environment for role %q", role)
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# quiccast %s on %s: written by task deploy; holds secrets (mode 0600)\n", role, h.Name)
	for _, k := range keys {
		// systemd EnvironmentFile: double quotes keep spaces; escape
		// backslashes and quotes.
		val := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v[k])
		fmt.Fprintf(&b, "%s=\"%s\"\n", k, val)
	}
	return b.String(), nil
}

// NoFile is LimitNOFILE for an edge of maxViewers viewers: a socket per
// viewer, with room for upstreams, files and the listeners.
func NoFile(maxViewers int) int { return maxViewers + maxViewers/4 + 4096 }

var unitTmpl = template.Must(template.New("unit").Parse(`# quiccast {{.Role}}: written by task deploy
[Unit]
Description=quiccast {{.Role}}
Documentation=https://github.com/quiccast/quiccast
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=` + User + `
Group=` + User + `
EnvironmentFile=` + EnvDir + `/{{.Role}}.env
ExecStart=` + Binary + ` {{.Role}}
# SIGTERM drains: edges send viewers GOAWAY so they move to another edge.
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=2
LimitNOFILE={{.NoFile}}
StateDirectory=quiccast
StateDirectoryMode=0700
UMask=0077

# Sandboxing: ports below 1024 and nothing else.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK

[Install]
WantedBy=multi-user.target
`))

// UnitFile returns the systemd unit of role (origin or edge).
func UnitFile(inv *inventory.Inventory, role string) (string, error) {
	if role != inventory.Origin && role != inventory.Edge {
		return "", fmt.Errorf("render: no unit for role %q", role)
	}
	var b bytes.Buffer
	err := unitTmpl.Execute(&b, struct {
		Role   string
		NoFile int
	}{role, NoFile(inv.Cluster.MaxViewers)})
	return b.String(), err
}

// MaxExposure bounds systemd-analyze security's exposure score of the
// units (0 is the most locked down, 10 the least; systemd calls under
// 2.0 "OK"). The units score 1.9: what is left is what a network server
// needs (Internet sockets, the host's network, CAP_NET_BIND_SERVICE).
const MaxExposure = 2.0

// Exposure finds "Overall exposure level for x.service: 1.9 OK" in
// systemd-analyze security's output.
func Exposure(out string) (float64, bool) {
	for _, l := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(l, "Overall exposure level for ")
		if !ok {
			continue
		}
		_, rest, ok = strings.Cut(rest, ": ")
		if f := strings.Fields(rest); ok && len(f) > 0 {
			v, err := strconv.ParseFloat(f[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}
