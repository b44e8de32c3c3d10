package relay

import (
	"crypto/rand"
	"encoding/hex"
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
}

// Flags declares the cluster settings; their env twins have no node prefix
// (QC_NODE_ID, QC_CLUSTER_TOKEN, QC_RELAY_CERT, …).
func (p *Peer) Flags(s *config.Set) {
	s.GlobalString(&p.NodeID, "node-id", "", "this node's id in the cluster; default: hostname and a random suffix")
	s.GlobalString(&p.Token, "cluster-token", "", "token relay peers present (HELLO) and require; empty allows any peer")
	s.GlobalString(&p.TLS.Cert, "relay-cert", "", "relay TLS certificate (PEM); default: self-signed")
	s.GlobalString(&p.TLS.Key, "relay-key", "", "relay TLS key (PEM)")
	s.GlobalString(&p.TLS.CA, "relay-ca", "", "CA (PEM) to verify relay peers with: mutual TLS; default: no verification, token only")
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
