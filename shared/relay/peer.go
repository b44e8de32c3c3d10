package relay

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/quiccast/quiccast/shared/config"
)

// Peer is how a node identifies itself to the cluster, shared by origins
// and edges.
type Peer struct {
	NodeID string   // unique per node
	Token  string   // cluster token relay peers present and require
	TLS    TLSFiles // relay certificates; empty: self-signed, token only
	// Insecure allows a relay listener other hosts can reach without a
	// cluster token or mutual TLS (a trusted private network only).
	Insecure bool
}

// Flags declares the cluster settings; their env twins have no node prefix
// (QC_NODE_ID, QC_CLUSTER_TOKEN, QC_RELAY_CERT, …).
func (p *Peer) Flags(s *config.Set) {
	s.GlobalString(&p.NodeID, "node-id", "", "this node's id in the cluster; default: hostname and a random suffix")
	s.GlobalString(&p.Token, "cluster-token", "", "token relay peers present (HELLO) and require; empty allows any peer")
	s.GlobalString(&p.TLS.Cert, "relay-cert", "", "relay TLS certificate (PEM); default: self-signed")
	s.GlobalString(&p.TLS.Key, "relay-key", "", "relay TLS key (PEM)")
	s.GlobalString(&p.TLS.CA, "relay-ca", "", "CA (PEM) to verify relay peers with: mutual TLS; default: no verification, token only")
	s.GlobalBool(&p.Insecure, "relay-insecure", false, "allow a relay listener other hosts can reach without -cluster-token or -relay-ca (anyone who reaches it can pull every broadcast); for a trusted private network only")
}

// Authenticated says whether relay peers must prove who they are: a
// cluster token or mutual TLS.
func (p *Peer) Authenticated() bool { return p.Token != "" || p.TLS.CA != "" }

// CheckListen refuses a relay listen address that other hosts can reach
// when relay peers are not authenticated: such a listener serves every
// broadcast to anyone, bypassing play tokens. Loopback addresses are
// fine; -relay-insecure allows the rest (the caller logs a warning, see
// Exposed). flag names the listen flag in the message.
func (p *Peer) CheckListen(flag, addr string) error {
	if !p.Exposed(addr) || p.Insecure {
		return nil
	}
	return fmt.Errorf("%s %q can be reached from other hosts, but relay peers are not authenticated: anyone could pull every broadcast from it. "+
		"Set -cluster-token (or -relay-ca for mutual TLS), listen on loopback (%s 127.0.0.1:PORT), or pass -relay-insecure on a trusted private network", flag, addr, flag)
}

// Exposed says whether a relay listener on addr is reachable from other
// hosts without authentication.
func (p *Peer) Exposed(addr string) bool {
	if p.Authenticated() {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// ID returns NodeID, making one up (hostname plus a random suffix) when it
// is empty.
func (p *Peer) ID() string {
	if p.NodeID == "" {
		host, _ := os.Hostname()
		host = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
				return r
			}
			return '-'
		}, host)
		var b [3]byte
		rand.Read(b[:])
		p.NodeID = host + "-" + hex.EncodeToString(b[:])
	}
	return p.NodeID
}

// NewIncarnation returns a random id for one run of a node's process
// (ServerConfig.Incarnation): a node restarted on the same address under
// the same id answers with another one.
func NewIncarnation() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
