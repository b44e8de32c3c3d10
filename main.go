// Command quiccast is the one binary of the quiccast live video CDN:
// origin, edge, demo and publish are its subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/version"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"demo", "origin + edge + a looping test broadcast in one process, no Redis or ffmpeg needed; prints the player URL", runDemo},
	{"origin", "accept broadcasts from publishers (RTMP/RTMPS and WebSocket ingest)", runOrigin},
	{"edge", "deliver broadcasts to viewers (WebTransport, WebSocket, player page)", runEdge},
	{"publish", "stream ffmpeg output (a file or a test pattern) to an origin, reconnecting as needed", runPublish},
	{"version", "print the version, commit and build time of this binary", runVersion},
	{"bench", "load-test a deployment (or a local one): viewers, latency percentiles, CPU per Gbit, memory per viewer", runBench},
}

// hiddenCommands run but are not listed: what the bench starts.
var hiddenCommands = []command{
	{"naive-wt", "the bench's naive WebTransport fan-out server (bench/naivewt)", runNaiveWT},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "quiccast: a low-latency live video CDN\n\nusage: quiccast <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'quiccast <command> -h' for a command's flags; each has a QC_… environment twin.\n")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range append(commands, hiddenCommands...) {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, context.Canceled):
			return 0
		case errors.Is(err, config.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(stderr, "quiccast %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "quiccast: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

var errUsage = errors.New("usage")

func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	fmt.Fprintln(stdout, version.Get())
	return nil
}

// logFlags are the logging settings every command shares.
type logFlags struct{ level, format string }

func (l *logFlags) declare(s *config.Set) {
	s.GlobalString(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	s.GlobalString(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", l.level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", l.format)
}

// parse parses a command's flags (usage and errors go to stderr) and
// builds its logger, which writes to stderr too.
func parse(s *config.Set, l *logFlags, args []string, stderr io.Writer) (*slog.Logger, error) {
	s.SetOutput(stderr)
	l.declare(s)
	if err := s.Parse(args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(s.Args()) > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, s.Args())
	}
	return l.logger(stderr)
}
