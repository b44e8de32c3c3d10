package main

import (
	"context"
	"errors"
	"io"

	"github.com/quiccast/quiccast/edge"
	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/publish"
)

func runOrigin(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg origin.Config
	var lf logFlags
	s := config.New("origin", "An origin accepts broadcasts: WebSocket ingest at /publish/{broadcast} (fragmented MP4) and RTMP at rtmp://HOST:1935/live/{broadcast} (OBS, ffmpeg).")
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
	s := config.New("edge", "An edge delivers broadcasts to viewers: /ws/{broadcast}, LL-HLS at /hls/{broadcast}/index.m3u8, the player at /watch/{broadcast}.")
	cfg.Flags(s)
	if _, err := parse(s, &lf, args, stderr); err != nil {
		return err
	}
	// A standalone edge pulls from origins over the QUIC relay, which is
	// not built yet; until then edges run inside `quiccast demo`.
	return errors.New("a standalone edge needs an upstream (the QUIC relay to origins); run `quiccast demo` for origin and edge in one process")
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
