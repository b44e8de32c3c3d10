// Package rollout puts a quiccast cluster on its hosts: it checks every
// host before touching any, then upgrades one node at a time, waits for
// each to answer /readyz, rolls back a node that does not, and reports
// what changed.
package rollout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quiccast/quiccast/infra/inventory"
	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/render"
)

// Options configures a run.
type Options struct {
	Inventory *inventory.Inventory
	// Hosts are the hosts to deploy, a subset of the inventory's.
	Hosts   []*inventory.Host
	Secrets inventory.Secrets
	SSH     remote.Config
	// Binary returns the local quiccast binary for an architecture
	// (amd64 or arm64), building it if needed. Called once per
	// architecture after every host has been reached.
	Binary func(ctx context.Context, arch string) (string, error)
	// ReadyTimeout bounds the wait for a restarted node's /readyz
	// (default 60s).
	ReadyTimeout time.Duration
	// Log receives progress lines (default os.Stderr).
	Log io.Writer
}

// Result is one host's line of the summary.
type Result struct {
	Host    string
	Roles   []string
	Before  string // `quiccast version` before, "-" when not installed
	After   string
	Changed []string // what changed: files, binary, restarts
	URLs    []string
}

// Error is a failed run: which host, what happened, and the hosts left
// untouched.
type Error struct {
	Host      string
	Err       error
	Untouched []string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("deploy stopped at %s: %v", e.Host, e.Err)
	if len(e.Untouched) > 0 {
		msg += fmt.Sprintf("\nnot touched: %s", strings.Join(e.Untouched, ", "))
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNotReady marks a node that did not answer /readyz in time.
var ErrNotReady = errors.New("not ready")

type target struct {
	h    *inventory.Host
	conn *remote.Host
	arch string
	bin  []byte
}

// Run deploys. Every host is reached (SSH, host key, sudo, systemd) and
// every binary built before the first host is changed.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	logf := func(f string, a ...any) { fmt.Fprintf(o.Log, f+"\n", a...) }
	hosts := order(o.Inventory, o.Hosts)

	// Preflight: reach every host first.
	var ts []*target
	defer func() {
		for _, t := range ts {
			t.conn.Close()
		}
	}()
	var errs []error
	for _, h := range hosts {
		c, err := remote.Dial(ctx, h.Name, h.Addr(), h.User, o.SSH)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t := &target{h: h, conn: c, arch: h.Arch}
		ts = append(ts, t)
		out, err := c.Run(ctx, "uname -m; command -v systemctl >/dev/null || echo no-systemctl", nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (with a user other than root, sudo must not ask for a password)", h.Name, err))
			continue
		}
		f := strings.Fields(out)
		if slices.Contains(f, "no-systemctl") {
			errs = append(errs, fmt.Errorf("%s: no systemctl: quiccast hosts run systemd (Debian or Ubuntu)", h.Name))
		}
		if t.arch == "" && len(f) > 0 {
			switch f[0] {
			case "x86_64", "amd64":
				t.arch = "amd64"
			case "aarch64", "arm64":
				t.arch = "arm64"
			default:
				errs = append(errs, fmt.Errorf("%s: unsupported machine %q", h.Name, f[0]))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("nothing was changed:\n%w", err)
	}
	bins := map[string][]byte{}
	for _, t := range ts {
		if !t.h.Has(inventory.Origin) && !t.h.Has(inventory.Edge) {
			continue
		}
		if bins[t.arch] == nil {
			p, err := o.Binary(ctx, t.arch)
			if err != nil {
				return nil, fmt.Errorf("nothing was changed: %w", err)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("nothing was changed: %w", err)
			}
			bins[t.arch] = b
		}
		t.bin = bins[t.arch]
	}
	files := map[*target][]render.File{}
	for _, t := range ts {
		f, err := render.Host(o.Inventory, t.h, o.Secrets)
		if err != nil {
			return nil, fmt.Errorf("nothing was changed: %s: %w", t.h.Name, err)
		}
		files[t] = f
	}

	var results []Result
	for i, t := range ts {
		logf("%s: deploying (%s)", t.h.Name, strings.Join(t.h.Roles, ", "))
		r, err := deployHost(ctx, o, t, files[t], logf)
		results = append(results, r)
		if err != nil {
			var left []string
			for _, u := range ts[i+1:] {
				left = append(left, u.h.Name)
			}
			return results, &Error{Host: t.h.Name, Err: err, Untouched: left}
		}
	}
	return results, nil
}

// order puts redis first, then origins, then edges, parents before the
// edges that pull from them.
func order(inv *inventory.Inventory, hosts []*inventory.Host) []*inventory.Host {
	rank := func(h *inventory.Host) int {
		switch {
		case h.Has(inventory.Redis):
			return 0
		case h.Has(inventory.Origin):
			return 1
		case h.Parent == "":
			return 2
		}
		d := 2
		for p := inv.Host(h.Parent); p != nil && d < 10; p = inv.Host(p.Parent) {
			d++
		}
		return d
	}
	out := slices.Clone(hosts)
	slices.SortStableFunc(out, func(a, b *inventory.Host) int { return rank(a) - rank(b) })
	return out
}

func installedVersion(ctx context.Context, c *remote.Host) string {
	out, err := c.Run(ctx, "if [ -x "+render.Binary+" ]; then "+render.Binary+" version; else echo -; fi", nil)
	if err != nil {
		return "? (" + strings.TrimSpace(out) + ")"
	}
	return versionOf(out)
}

// versionOf takes "quiccast v1.2.0 commit …" to "v1.2.0".
func versionOf(out string) string {
	f := strings.Fields(out)
	if len(f) >= 2 && f[0] == "quiccast" {
		return f[1]
	}
	if len(f) == 1 {
		return f[0]
	}
	return strings.TrimSpace(out)
}

func deployHost(ctx context.Context, o Options, t *target, files []render.File, logf func(string, ...any)) (Result, error) {
	c, h := t.conn, t.h
	r := Result{Host: h.Name, Roles: h.Roles, URLs: urls(o.Inventory, h)}
	r.Before = installedVersion(ctx, c)
	r.After = r.Before
	changed := map[string]bool{}
	mark := func(what string) {
		changed[what] = true
		r.Changed = append(r.Changed, what)
	}

	if h.Has(inventory.Origin) || h.Has(inventory.Edge) {
		out, err := c.Run(ctx, fmt.Sprintf(`set -e
if ! id -u %[1]s >/dev/null 2>&1; then
  useradd --system --user-group --home-dir %[2]s --no-create-home --shell /usr/sbin/nologin %[1]s
  echo created
fi
install -d -m 0700 -o %[1]s -g %[1]s %[2]s
install -d -m 0755 %[3]s`, render.User, render.StateDir, render.EnvDir), nil)
		if err != nil {
			return r, fmt.Errorf("system user: %w", err)
		}
		if strings.Contains(out, "created") {
			mark("user " + render.User)
		}
	}
	if h.Has(inventory.Redis) {
		out, err := c.Run(ctx, `set -e
if ! command -v redis-server >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  echo installed
fi
grep -qxF 'include `+render.RedisInc+`' `+render.RedisCnf+` || { printf '\ninclude `+render.RedisInc+`\n' >> `+render.RedisCnf+`; echo included; }`, nil)
		if err != nil {
			return r, fmt.Errorf("redis-server: %w", err)
		}
		if strings.Contains(out, "installed") {
			mark("redis-server installed")
		}
		if strings.Contains(out, "included") {
			mark(render.RedisCnf)
		}
	}
	var saved []string // node files this run replaces; their old versions are kept for a rollback
	for _, f := range files {
		sum, err := c.SHA256(ctx, f.Path)
		if err != nil {
			return r, err
		}
		if sum == remote.Sum(f.Content) {
			continue
		}
		if nodeFile(f.Path) {
			if err := keepPrevious(ctx, c, f.Path); err != nil {
				return r, err
			}
			saved = append(saved, f.Path)
		}
		if err := c.Put(ctx, f.Path, f.Content, f.Mode, f.Owner); err != nil {
			return r, err
		}
		logf("%s: wrote %s", h.Name, f.Path)
		mark(f.Path)
	}
	if changed[render.Sysctl] {
		if out, err := c.Run(ctx, "sysctl -q -p "+render.Sysctl, nil); err != nil {
			logf("%s: warning: could not apply %s (%v%s); quic-go will log that its UDP buffers are small", h.Name, render.Sysctl, err, strings.TrimSpace(out))
		}
	}
	if h.Has(inventory.Redis) {
		if err := restartRedis(ctx, c, o.Secrets, h, changed[render.RedisInc] || changed[render.RedisCnf], o.ReadyTimeout); err != nil {
			return r, err
		}
		if changed[render.RedisInc] || changed[render.RedisCnf] {
			r.Changed = append(r.Changed, "restarted redis-server")
		}
	}
	if t.bin == nil {
		return r, nil
	}

	newBin := false
	sum, err := c.SHA256(ctx, render.Binary)
	if err != nil {
		return r, err
	}
	if sum != remote.Sum(t.bin) {
		if err := c.Put(ctx, render.Binary+".new", t.bin, 0o755, ""); err != nil {
			return r, err
		}
		if _, err := c.Run(ctx, fmt.Sprintf("set -e; if [ -e %[1]s ]; then cp -p %[1]s %[2]s.tmp && mv -f %[2]s.tmp %[2]s; fi; mv -f %[1]s.new %[1]s", render.Binary, render.Previous), nil); err != nil {
			return r, err
		}
		newBin = true
		mark("binary")
	}
	unitChanged := false
	for _, role := range []string{inventory.Origin, inventory.Edge} {
		if h.Has(role) && changed["/etc/systemd/system/"+render.Unit(role)] {
			unitChanged = true
		}
	}
	if unitChanged {
		if _, err := c.Run(ctx, "systemctl daemon-reload", nil); err != nil {
			return r, err
		}
	}
	for _, role := range []string{inventory.Origin, inventory.Edge} {
		if !h.Has(role) {
			continue
		}
		unit := render.Unit(role)
		active, _ := c.Run(ctx, "systemctl is-active "+unit+" || true", nil)
		restart := newBin || unitChanged || changed[render.EnvDir+"/"+role+".env"] || changed[render.EnvDir+"/acme-ca-root.pem"] || strings.TrimSpace(active) != "active"
		if !restart {
			continue
		}
		logf("%s: restarting %s", h.Name, unit)
		if _, err := c.Run(ctx, "systemctl enable --quiet "+unit+" && systemctl restart "+unit, nil); err != nil {
			err = fmt.Errorf("restart %s: %w", unit, err)
			return r, rollback(ctx, o, t, newBin, saved, unit, err, &r, logf)
		}
		r.Changed = append(r.Changed, "restarted "+unit)
		if err := waitReady(ctx, o, t, role); err != nil {
			return r, rollback(ctx, o, t, newBin, saved, unit, err, &r, logf)
		}
		logf("%s: %s ready", h.Name, unit)
	}
	r.After = installedVersion(ctx, c)
	return r, nil
}

// nodeFile reports whether a deployed file is part of a node's
// configuration (its env files and units), restored by a rollback.
func nodeFile(path string) bool {
	return strings.HasPrefix(path, render.EnvDir+"/") || strings.HasPrefix(path, "/etc/systemd/system/")
}

// previousPath is where keepPrevious keeps the old version of path.
func previousPath(path string) string {
	return render.PreviousDir + "/" + strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "%")
}

// keepPrevious saves path as it is before a deploy replaces it (mode and
// owner kept), or notes that it did not exist.
func keepPrevious(ctx context.Context, c *remote.Host, path string) error {
	b := previousPath(path)
	_, err := c.Run(ctx, fmt.Sprintf(`set -e
install -d -m 0700 %[1]s
rm -f '%[2]s' '%[2]s.absent'
if [ -e '%[3]s' ]; then cp -p '%[3]s' '%[2]s'; else : > '%[2]s.absent'; fi`, render.PreviousDir, b, path), nil)
	if err != nil {
		return fmt.Errorf("keep the previous %s: %w", path, err)
	}
	return nil
}

// restorePrevious puts back the files keepPrevious saved (a file that did
// not exist is removed), each atomically, and reloads systemd when a unit
// was among them.
func restorePrevious(ctx context.Context, c *remote.Host, paths []string) error {
	var sb strings.Builder
	sb.WriteString("set -e\n")
	units := false
	for _, p := range paths {
		b := previousPath(p)
		fmt.Fprintf(&sb, "if [ -e '%[1]s.absent' ]; then rm -f '%[2]s'; else cp -p '%[1]s' '%[2]s.tmp' && mv -f '%[2]s.tmp' '%[2]s'; fi\n", b, p)
		units = units || strings.HasPrefix(p, "/etc/systemd/system/")
	}
	if units {
		sb.WriteString("systemctl daemon-reload\n")
	}
	if _, err := c.Run(ctx, sb.String(), nil); err != nil {
		return fmt.Errorf("restore %s: %w", strings.Join(paths, ", "), err)
	}
	return nil
}

// rollback puts back what this run replaced on the node after cause: the
// previous binary (when newBin) and the env and unit files in saved; then
// it restarts the node's services and waits for them. The run stops
// either way.
func rollback(ctx context.Context, o Options, t *target, newBin bool, saved []string, unit string, cause error, r *Result, logf func(string, ...any)) error {
	c := t.conn
	logs, _ := c.Run(ctx, "journalctl -u "+unit+" -n 20 --no-pager 2>/dev/null || true", nil)
	if strings.TrimSpace(logs) != "" {
		cause = fmt.Errorf("%w\nlast log lines of %s:\n%s", cause, unit, strings.TrimSpace(logs))
	}
	if !newBin && len(saved) == 0 {
		r.After = installedVersion(ctx, c)
		return fmt.Errorf("%s failed with the binary and configuration it had before (nothing to roll back to; check the host): %w", unit, cause)
	}
	what := "the new configuration"
	restored := slices.Clone(saved)
	if newBin {
		what = "new binary"
		restored = append([]string{render.Binary}, restored...)
	}
	logf("%s: %s not ready; rolling back %s", t.h.Name, unit, strings.Join(restored, ", "))
	if newBin {
		if _, err := c.Run(ctx, fmt.Sprintf("set -e; [ -e %[2]s ] || { echo 'no previous binary (first install)' >&2; exit 1; }; cp -p %[2]s %[1]s.tmp && mv -f %[1]s.tmp %[1]s", render.Binary, render.Previous), nil); err != nil {
			r.After = installedVersion(ctx, c)
			return fmt.Errorf("new binary failed and rollback was impossible (%v): %w", err, cause)
		}
	}
	if len(saved) > 0 {
		if err := restorePrevious(ctx, c, saved); err != nil {
			r.After = installedVersion(ctx, c)
			return fmt.Errorf("%s failed and rollback was impossible (%v): %w", what, err, cause)
		}
	}
	r.Changed = append(r.Changed, "rolled back")
	var errs []error
	for _, rl := range []string{inventory.Origin, inventory.Edge} {
		if !t.h.Has(rl) {
			continue
		}
		u := render.Unit(rl)
		if _, err := c.Run(ctx, "systemctl restart "+u, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := waitReady(ctx, o, t, rl); err != nil {
			errs = append(errs, err)
		}
	}
	r.After = installedVersion(ctx, c)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s failed (%w) and the previous %s does not come back either: %v", what, cause, r.After, err)
	}
	return fmt.Errorf("%s failed: %w; rolled back to %s, which is ready (restored %s)", what, cause, r.After, strings.Join(restored, ", "))
}

// readyURL is where role on h answers /readyz, seen from h itself.
func readyURL(inv *inventory.Inventory, h *inventory.Host, role string) (string, *tls.Config) {
	if role == inventory.Origin {
		return "http://127.0.0.1:" + strconv.Itoa(h.Ports.OriginHTTP) + "/readyz", nil
	}
	if h.TLS(inv) {
		// SSH already authenticated the host; the name makes the edge
		// pick its ACME certificate.
		return "https://127.0.0.1:" + strconv.Itoa(h.Ports.EdgeHTTP) + "/readyz", &tls.Config{ServerName: h.DNS, InsecureSkipVerify: true}
	}
	return "http://127.0.0.1:" + strconv.Itoa(h.Ports.EdgeHTTP) + "/readyz", nil
}

func waitReady(ctx context.Context, o Options, t *target, role string) error {
	u, tc := readyURL(o.Inventory, t.h, role)
	cl := t.conn.HTTPClient(5*time.Second, &http.Transport{TLSClientConfig: tc})
	deadline := time.Now().Add(o.ReadyTimeout)
	var last error
	down := 0
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s on %s did not answer %s within %v (last: %v)", ErrNotReady, role, t.h.Name, u, o.ReadyTimeout, last)
		}
		// A unit that has exited (failed or inactive, or waiting to be
		// restarted: systemd shows that as activating, sub-state
		// auto-restart, and Restart=on-failure would retry a broken
		// binary forever), twice in a row, will not answer: no need to
		// wait out the timeout.
		unit := render.Unit(role)
		if st, _ := t.conn.Run(ctx, "systemctl is-active "+unit+" || true; systemctl show -p SubState --value "+unit+" 2>/dev/null || true", nil); isDown(st) {
			if down++; down >= 2 {
				return fmt.Errorf("%w: %s on %s exited (systemctl is-active: %s) before answering %s", ErrNotReady, role, t.h.Name, strings.Join(strings.Fields(st), ", "), u)
			}
		} else {
			down = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// isDown is whether systemctl is-active (and systemctl show -p
// SubState, where systemctl has it) printed the state of a unit whose
// process has exited: failed, inactive, or waiting to be restarted.
func isDown(state string) bool {
	f := strings.Fields(state)
	if len(f) == 0 {
		return false
	}
	return f[0] == "failed" || f[0] == "inactive" || (f[0] == "activating" && len(f) > 1 && f[1] == "auto-restart")
}

func restartRedis(ctx context.Context, c *remote.Host, s inventory.Secrets, h *inventory.Host, restart bool, timeout time.Duration) error {
	if restart {
		if _, err := c.Run(ctx, "systemctl enable --quiet redis-server && systemctl restart redis-server", nil); err != nil {
			return fmt.Errorf("restart redis-server: %w", err)
		}
	}
	// Wait for PING through the private address, with the password.
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.Run(ctx, fmt.Sprintf("REDISCLI_AUTH=%s redis-cli -h %s -p %d ping 2>&1", remote.Quote(s.RedisPassword), remote.Quote(h.Private), h.Ports.Redis), nil)
		if err == nil && strings.TrimSpace(out) == "PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			logs, _ := c.Run(ctx, "journalctl -u redis-server -n 20 --no-pager 2>/dev/null || true; tail -n 20 /var/log/redis/redis-server.log 2>/dev/null || true", nil)
			return fmt.Errorf("redis-server on %s:%d does not answer PING with the password: %v %s\nlast log lines:\n%s", h.Private, h.Ports.Redis, err, strings.TrimSpace(out), strings.TrimSpace(logs))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// urls lists where people reach the host's services.
func urls(inv *inventory.Inventory, h *inventory.Host) []string {
	pub, _, _ := net.SplitHostPort(h.Addr())
	var out []string
	if h.Has(inventory.Origin) {
		out = append(out,
			"rtmp://"+net.JoinHostPort(pub, strconv.Itoa(h.Ports.RTMP))+"/live/{broadcast}",
			"ws://"+net.JoinHostPort(pub, strconv.Itoa(h.Ports.OriginHTTP))+"/publish/{broadcast}",
			"http://"+net.JoinHostPort(pub, strconv.Itoa(h.Ports.OriginHTTP))+"/metrics")
	}
	if h.Has(inventory.Edge) {
		base := "http://" + net.JoinHostPort(pub, strconv.Itoa(h.Ports.EdgeHTTP))
		if h.TLS(inv) {
			base = "https://" + h.DNS
			if h.Ports.EdgeHTTP != 443 {
				base += ":" + strconv.Itoa(h.Ports.EdgeHTTP)
			}
		}
		out = append(out, base+"/watch/{broadcast}", base+"/metrics")
	}
	if h.Has(inventory.Redis) {
		out = append(out, "redis://"+net.JoinHostPort(h.Private, strconv.Itoa(h.Ports.Redis)))
	}
	return out
}

// Summary writes the table of results.
func Summary(w io.Writer, rs []Result) {
	if len(rs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tROLES\tBEFORE\tAFTER\tCHANGED\tURLS")
	nothing := true
	for _, r := range rs {
		ch := "nothing"
		if len(r.Changed) > 0 {
			ch = changes(r.Changed)
			nothing = false
		}
		us := r.URLs
		if len(us) == 0 {
			us = []string{""}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Host, strings.Join(r.Roles, ","), r.Before, r.After, ch, us[0])
		for _, u := range us[1:] {
			fmt.Fprintf(tw, "\t\t\t\t\t%s\n", u)
		}
	}
	tw.Flush()
	if nothing {
		fmt.Fprintln(w, "Nothing changed: every host already had this build and configuration.")
	}
}

// changes shortens a host's changes for the table: written files are
// counted (the log names them), actions listed.
func changes(cs []string) string {
	var out []string
	files := 0
	for _, c := range cs {
		if strings.HasPrefix(c, "/") {
			files++
			continue
		}
		out = append(out, c)
	}
	if files == 1 {
		out = append([]string{"1 file"}, out...)
	} else if files > 1 {
		out = append([]string{strconv.Itoa(files) + " files"}, out...)
	}
	return strings.Join(out, ", ")
}
