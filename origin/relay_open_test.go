package origin

import (
	"strings"
	"testing"

	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/testenv"
)

// Issue 9, finding 8: an origin without -cluster-token served every
// broadcast over a relay listener on all interfaces to anyone.
func TestRelayReachableFromOtherHostsNeedsClusterAuth(t *testing.T) {
	start := func(peer relay.Peer, listen string) (*testenv.Logs, error) {
		logs := &testenv.Logs{}
		n, err := New(Config{Listen: "127.0.0.1:0", RelayListen: listen, Peer: peer, Logger: logs.Logger()})
		if err == nil {
			n.Close()
		}
		return logs, err
	}
	_, err := start(relay.Peer{}, "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "-cluster-token") || !strings.Contains(err.Error(), "-relay-listen") {
		t.Fatalf("open relay on all interfaces: %v, want a refusal naming -cluster-token", err)
	}
	for _, ok := range []struct {
		peer   relay.Peer
		listen string
		warn   bool
	}{
		{relay.Peer{}, "127.0.0.1:0", false},
		{relay.Peer{}, "[::1]:0", false},
		{relay.Peer{Token: "t0ken"}, "0.0.0.0:0", false},
		{relay.Peer{Insecure: true}, "0.0.0.0:0", true},
	} {
		logs, err := start(ok.peer, ok.listen)
		if err != nil {
			t.Fatalf("%+v on %s: %v", ok.peer, ok.listen, err)
		}
		if warned := len(logs.Lines("level=WARN", "relay listener open to anyone")) > 0; warned != ok.warn {
			t.Errorf("%+v on %s: warning logged %v, want %v", ok.peer, ok.listen, warned, ok.warn)
		}
	}
	// The flag's default is loopback, so a plain `quiccast origin` starts.
	var d Config
	d.withDefaults()
	if d.RelayListen != "127.0.0.1:7001" {
		t.Errorf("default -relay-listen %q", d.RelayListen)
	}
}
