package main

import (
	"context"
	"io"

	"github.com/quiccast/quiccast/edge"
	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/publish"
)

func runOrigin(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg origin.Config
	var lf logFlags
	s := config.New("origin", "An origin accepts broadcasts (WebSocket ingest at /publish/{broadcast}, fragmented MP4), records them in Redis and serves them to edges over the QUIC relay.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	n, err := origin.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func runEdge(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg edge.Config
	var lf logFlags
	s := config.New("edge", "An edge delivers broadcasts to viewers (WebTransport at /wt/{broadcast} over HTTP/3, WebSocket at /ws/{broadcast}, the player at /watch/{broadcast}), pulling each once over the QUIC relay from its origin (found in Redis) or a parent.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	n, err := edge.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func runPublish(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg publish.Config
	var lf logFlags
	s := config.New("publish", "Publish runs ffmpeg (a file in a loop, or a test pattern) to fragmented MP4 and streams it to an origin's /publish/{broadcast}, reconnecting with backoff.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	return publish.Run(ctx, cfg)
}
