package main

import (
	"context"
	"io"

	"github.com/quiccast/quiccast/bench/naivewt"
	"github.com/quiccast/quiccast/shared/config"
)

// runNaiveWT is the hidden `quiccast naive-wt`: the bench's naive
// WebTransport fan-out server (bench/naivewt), the control the edge is
// measured against (`quiccast bench -server naive`, `-naive-set`).
func runNaiveWT(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg naivewt.Config
	var lf logFlags
	s := config.New("naive-wt", "The bench's naive WebTransport fan-out server (bench/naivewt): pulls broadcasts from -origin's relay and serves /wt/{broadcast} with a goroutine and a blocking write per viewer. A control for measurements, not for production.")
	s.String(&cfg.Origin, "origin", "", "the origin's relay address (host:port)")
	s.String(&cfg.Listen, "listen", "127.0.0.1:0", "TCP address of /metrics, /cert-hash and /debug/pprof; WebTransport on the UDP port of the same number (or any free one)")
	s.String(&cfg.Token, "cluster-token", "", "the origin's cluster token")
	s.GlobalString(&cfg.AdminToken, "admin-token", "", "token required for /metrics and /debug/pprof")
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	n, err := naivewt.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}
