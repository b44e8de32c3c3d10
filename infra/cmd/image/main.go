// Command image builds quiccast's container image without a daemon: a
// static, stamped binary per architecture, written as an OCI image
// layout (infra/image). `go tool task image` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/quiccast/quiccast/infra/build"
	"github.com/quiccast/quiccast/infra/image"
)

func main() {
	out := flag.String("out", ".bin/oci", "the OCI image layout directory to write (created or added to)")
	archs := flag.String("arch", "amd64,arm64", "architectures, comma-separated")
	src := flag.String("src", ".", "the quiccast source tree")
	flag.Parse()
	ctx := context.Background()
	s := build.StampOf(ctx, *src)
	created, err := time.Parse(time.RFC3339, s.Built)
	if err != nil {
		created = time.Now()
	}
	tmp, err := os.MkdirTemp("", "quiccast-image-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	for _, arch := range strings.Split(*archs, ",") {
		bin, err := build.Binary(ctx, *src, tmp, arch, s)
		if err != nil {
			fail(err)
		}
		d, err := image.Write(*out, image.Options{Binary: bin, Arch: arch, Version: s.Version, Created: created})
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s linux/%s %s\n", s.Version, arch, d.Digest)
	}
	fmt.Printf("OCI image layout in %s. Load: skopeo copy oci:%s:%s docker-daemon:quiccast:%s (or podman pull oci:%s:%s); push: skopeo copy oci:%s:%s docker://REGISTRY/quiccast:%s\n",
		*out, *out, s.Version, s.Version, *out, s.Version, *out, s.Version, s.Version)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}
