package image

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/infra/build"
	"github.com/quiccast/quiccast/shared/testenv"
)

// The image is built without a daemon, the same bytes twice, and a real
// OCI tool (umoci, from Debian) reads it: it unpacks it (a corrupted
// blob fails it) into a runtime bundle whose process is quiccast as user
// 65532. The binary then runs from the image's own files, as that user
// (chroot into the unpacked root): `quiccast version` prints the stamp.
func TestImageBuildsWithoutADaemonAndItsBinaryRuns(t *testing.T) {
	umoci := testenv.RequireTool(t, "umoci")
	if os.Geteuid() != 0 {
		t.Skip("unpacking an image with its owners and chroot need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stamp := build.Stamp{Version: "v9.9.9-image-test", Commit: "0123456789abcdef", Built: "2026-12-03T00:00:00Z"}
	bin, err := build.Binary(ctx, "../..", t.TempDir(), "amd64", stamp)
	if err != nil {
		t.Fatal(err)
	}
	created, _ := time.Parse(time.RFC3339, stamp.Built)
	o := Options{Binary: bin, Arch: "amd64", Version: stamp.Version, Created: created}
	dir := filepath.Join(t.TempDir(), "oci")
	d1, err := Write(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Write(filepath.Join(t.TempDir(), "oci"), o)
	if err != nil {
		t.Fatal(err)
	}
	if d1.Digest != d2.Digest {
		t.Errorf("two builds of the same input: %s and %s, want the same digest", d1.Digest, d2.Digest)
	}
	t.Logf("image %s: manifest %s", stamp.Version, d1.Digest)

	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.CommandContext(ctx, umoci, "unpack", "--image", dir+":"+stamp.Version, bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	var spec struct {
		Process struct {
			User struct{ UID, GID int }
			Args []string
			Env  []string
			Cwd  string
		}
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	p := spec.Process
	if p.User.UID != UID || p.User.GID != UID || strings.Join(p.Args, " ") != "/usr/local/bin/quiccast version" || p.Cwd != Home {
		t.Fatalf("runtime config: user %d:%d, args %q, cwd %q; want %d:%d, [/usr/local/bin/quiccast version], %s", p.User.UID, p.User.GID, p.Args, p.Cwd, UID, UID, Home)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if fi, err := os.Stat(filepath.Join(rootfs, "home/nonroot/acme")); err != nil || !fi.IsDir() {
		t.Fatalf("the ACME volume's directory: %v", err)
	}
	cmd := exec.CommandContext(ctx, "chroot", "--userspec=65532:65532", rootfs, p.Args[0], p.Args[1])
	cmd.Env = p.Env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quiccast version in the image, as 65532: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), stamp.Version) || !strings.Contains(string(out), stamp.Commit) {
		t.Fatalf("quiccast version in the image: %q, want %s and %s", out, stamp.Version, stamp.Commit)
	}
	t.Logf("in the image, as user 65532: %s", strings.TrimSpace(string(out)))
}
