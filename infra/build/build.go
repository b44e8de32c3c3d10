// Package build compiles static quiccast binaries for the hosts'
// architectures, stamped with version, commit and build time.
package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Stamp is what `quiccast version` will print.
type Stamp struct{ Version, Commit, Built string }

const pkg = "github.com/quiccast/quiccast/shared/version"

// StampOf describes the source tree at dir: `git describe --tags --always
// --dirty`, the commit, and as build time the commit's time (or
// SOURCE_DATE_EPOCH), so the same source builds the same binary and a
// second deploy changes nothing.
func StampOf(ctx context.Context, dir string) Stamp {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	s := Stamp{Version: git("describe", "--tags", "--always", "--dirty"), Commit: git("rev-parse", "HEAD"), Built: git("log", "-1", "--format=%cI")}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		var sec int64
		if _, err := fmt.Sscan(e, &sec); err == nil {
			s.Built = time.Unix(sec, 0).UTC().Format(time.RFC3339)
		}
	}
	if s.Version == "" {
		s.Version = "devel"
	}
	if t, err := time.Parse(time.RFC3339, s.Built); err == nil {
		s.Built = t.UTC().Format(time.RFC3339)
	}
	return s
}

// LDFlags returns the -ldflags value that stamps s.
func LDFlags(s Stamp) string {
	var f []string
	for _, kv := range [][2]string{{"version", s.Version}, {"commit", s.Commit}, {"built", s.Built}} {
		if kv[1] != "" {
			f = append(f, "-X", pkg+"."+kv[0]+"="+kv[1])
		}
	}
	return strings.Join(append([]string{"-s", "-w"}, f...), " ")
}

// Binary builds the quiccast command in dir for linux/arch into outDir
// and returns the file's path: CGO_ENABLED=0, -trimpath, stamped.
func Binary(ctx context.Context, dir, outDir, arch string, s Stamp) (string, error) {
	switch arch {
	case "amd64", "arm64":
	default:
		return "", fmt.Errorf("build: unsupported architecture %q", arch)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	out, err := filepath.Abs(filepath.Join(outDir, "quiccast-linux-"+arch))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", LDFlags(s), "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build linux/%s: %v\n%s", arch, err, b)
	}
	return out, nil
}
