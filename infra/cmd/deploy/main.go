// Command deploy puts a quiccast cluster on the hosts of an inventory over
// SSH: `go tool task deploy` runs it (HOSTS=edge-2, ROLE=edge filter).
//
//	go run ./infra/cmd/deploy -inventory infra/inventory.yaml [-hosts a,b] [-role edge]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quiccast/quiccast/infra/build"
	"github.com/quiccast/quiccast/infra/cloudinit"
	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/rollout"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	invPath := fs.String("inventory", envOr("INVENTORY", "infra/inventory.yaml"), "inventory file (env INVENTORY)")
	hosts := fs.String("hosts", os.Getenv("HOSTS"), "comma-separated host names to deploy; default all (env HOSTS)")
	role := fs.String("role", os.Getenv("ROLE"), "deploy only hosts with this role: redis, origin or edge (env ROLE)")
	src := fs.String("src", ".", "the quiccast source tree to build")
	out := fs.String("out", ".bin/deploy", "where the built binaries go")
	binAMD := fs.String("binary-amd64", "", "deploy this linux/amd64 binary instead of building one")
	binARM := fs.String("binary-arm64", "", "deploy this linux/arm64 binary instead of building one")
	ready := fs.Duration("ready-timeout", 60*time.Second, "how long a restarted node has to answer /readyz before it is rolled back")
	check := fs.Bool("check", false, "only read and check the inventory and its secrets; touch nothing")
	userData := fs.String("cloud-init", "", "print the cloud-init user-data of this host (for a new VM) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	inv, err := inventory.Load(*invPath)
	if err != nil {
		fmt.Fprintln(stderr, "deploy:", err)
		return 1
	}
	if *userData != "" {
		h := inv.Host(*userData)
		if h == nil {
			fmt.Fprintf(stderr, "deploy: -cloud-init: no host %q in the inventory\n", *userData)
			return 1
		}
		b, err := cloudinit.UserData(inv, h)
		if err != nil {
			fmt.Fprintln(stderr, "deploy:", err)
			return 1
		}
		stdout.Write(b)
		return 0
	}
	sel, err := inv.Select(*hosts, *role)
	if err != nil {
		fmt.Fprintln(stderr, "deploy:", err)
		return 1
	}
	secrets, err := inv.Resolve()
	if err != nil {
		fmt.Fprintf(stderr, "deploy: nothing was changed:\n%v\n", err)
		return 1
	}
	if *check {
		fmt.Fprintf(stdout, "inventory %s is valid: %d hosts selected\n", *invPath, len(sel))
		return 0
	}
	kh := inv.SSH.KnownHosts
	if kh == "" {
		kh = "~/.ssh/known_hosts"
	}
	key := inv.SSH.Key
	if key != "" {
		key = inv.Path(key)
	}
	stamp := build.StampOf(ctx, *src)
	given := map[string]string{"amd64": *binAMD, "arm64": *binARM}
	res, err := rollout.Run(ctx, rollout.Options{
		Inventory: inv,
		Hosts:     sel,
		Secrets:   secrets,
		SSH:       remote.Config{KnownHosts: inv.Path(kh), Key: key},
		Binary: func(ctx context.Context, arch string) (string, error) {
			if p := given[arch]; p != "" {
				return p, nil
			}
			fmt.Fprintf(stderr, "building quiccast %s for linux/%s\n", stamp.Version, arch)
			return build.Binary(ctx, *src, *out, arch, stamp)
		},
		ReadyTimeout: *ready,
		Log:          stderr,
	})
	if len(res) > 0 {
		rollout.Summary(stdout, res)
	}
	if err != nil {
		fmt.Fprintln(stderr, "deploy:", err)
		return 1
	}
	return 0
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
