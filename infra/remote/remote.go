// Package remote runs commands on a host over SSH and puts files there
// atomically. Host keys are always checked against known_hosts; there are
// no password prompts (the agent or a key file only).
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Config says how to reach and authenticate to hosts.
type Config struct {
	// KnownHosts is the known_hosts file; required.
	KnownHosts string
	// Key is a private key file; empty uses the agent at SSH_AUTH_SOCK,
	// then the default key files.
	Key string
	// Timeout bounds connecting and the SSH handshake (default 15s).
	Timeout time.Duration
}

// Host is an SSH connection to one host.
type Host struct {
	Name   string
	client *ssh.Client
	sudo   bool // commands are wrapped in sudo -n (the user is not root)
}

// ErrHostKey marks a host key that known_hosts does not vouch for.
var ErrHostKey = errors.New("host key not trusted")

// Dial connects to addr (host:port) as user.
func Dial(ctx context.Context, name, addr, user string, cfg Config) (*Host, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	hk, err := knownhosts.New(cfg.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	auth, err := authMethods(cfg.Key)
	if err != nil {
		return nil, err
	}
	conf := &ssh.ClientConfig{
		User: user,
		Auth: auth,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := hk(host, remote, key); err != nil {
				var ke *knownhosts.KeyError
				if errors.As(err, &ke) && len(ke.Want) > 0 {
					return fmt.Errorf("%w: %s presented %s %s, which does not match %s (line %d); if the host was rebuilt, remove the old line (ssh-keygen -R)", ErrHostKey, host, key.Type(), ssh.FingerprintSHA256(key), ke.Want[0].Filename, ke.Want[0].Line)
				}
				if errors.As(err, &ke) {
					return fmt.Errorf("%w: %s (%s %s) is not in %s; add it after checking the fingerprint (ssh-keyscan)", ErrHostKey, host, key.Type(), ssh.FingerprintSHA256(key), cfg.KnownHosts)
				}
				return fmt.Errorf("%w: %v", ErrHostKey, err)
			}
			return nil
		},
		HostKeyAlgorithms: nil,
		Timeout:           cfg.Timeout,
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	conn.SetDeadline(time.Now().Add(cfg.Timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, conf)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: ssh %s@%s: %w", name, user, addr, err)
	}
	conn.SetDeadline(time.Time{})
	h := &Host{Name: name, client: ssh.NewClient(c, chans, reqs), sudo: user != "root"}
	return h, nil
}

func authMethods(key string) ([]ssh.AuthMethod, error) {
	if key != "" {
		s, err := readKey(key)
		if err != nil {
			return nil, err
		}
		return []ssh.AuthMethod{ssh.PublicKeys(s)}, nil
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			return []ssh.AuthMethod{ssh.PublicKeysCallback(agent.NewClient(c).Signers)}, nil
		}
	}
	home, _ := os.UserHomeDir()
	var signers []ssh.Signer
	for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		if s, err := readKey(path.Join(home, ".ssh", n)); err == nil {
			signers = append(signers, s)
		}
	}
	if len(signers) == 0 {
		return nil, errors.New("ssh: no agent (SSH_AUTH_SOCK) and no key file; set ssh.key in the inventory")
	}
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, nil
}

func readKey(file string) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	var pe *ssh.PassphraseMissingError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("ssh key %s has a passphrase: load it into ssh-agent instead (no prompts during a deploy)", file)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", file, err)
	}
	return s, nil
}

// Close closes the connection.
func (h *Host) Close() error { return h.client.Close() }

// Quote quotes s for a POSIX shell.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Run runs a shell script (as root: through sudo -n when the user is not
// root) with stdin, and returns its standard output. A failure's error
// holds its standard error.
func (h *Host) Run(ctx context.Context, script string, stdin io.Reader) (string, error) {
	s, err := h.client.NewSession()
	if err != nil {
		return "", fmt.Errorf("%s: session: %w", h.Name, err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	cmd := "sh -c " + Quote(script)
	if h.sudo {
		cmd = "sudo -n " + cmd
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGTERM)
		s.Close()
		// The session's copy goroutines still hold out; let them finish.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		return "", ctx.Err()
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return out.String(), fmt.Errorf("%s: %w: %s", h.Name, err, msg)
	}
	return out.String(), nil
}

// SHA256 returns the hex SHA-256 of a remote file, "" when it does not
// exist.
func (h *Host) SHA256(ctx context.Context, file string) (string, error) {
	out, err := h.Run(ctx, "if [ -e "+Quote(file)+" ]; then sha256sum "+Quote(file)+"; fi", nil)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "", nil
	}
	return f[0], nil
}

// Sum is the hex SHA-256 of b.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Put writes content to file atomically: into a temporary file in the
// same directory, synced, given its mode and owner, checked against its
// SHA-256, then renamed over file. A reader sees the old file or the new,
// never a part.
func (h *Host) Put(ctx context.Context, file string, content []byte, mode uint32, owner string) error {
	return h.PutFrom(ctx, file, bytes.NewReader(content), Sum(content), mode, owner)
}

// PutFrom is Put for content read from r, whose SHA-256 is sum. An upload
// cut short leaves file as it was and removes its temporary file.
func (h *Host) PutFrom(ctx context.Context, file string, r io.Reader, sum string, mode uint32, owner string) error {
	if owner == "" {
		owner = "root:root"
	}
	dir := path.Dir(file)
	tmp := path.Join(dir, "."+path.Base(file)+".quiccast-tmp")
	script := fmt.Sprintf(`set -e
mkdir -p %[1]s
t=$(mktemp %[2]s.XXXXXX)
trap 'rm -f "$t"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$t"
[ "$(sha256sum < "$t" | cut -d' ' -f1)" = %[3]s ] || { echo "upload of %[4]s was cut short" >&2; exit 1; }
chown %[5]s "$t"
chmod %[6]o "$t"
sync "$t" 2>/dev/null || sync
mv -f "$t" %[4]s
trap - EXIT
`, Quote(dir), Quote(tmp), sum, Quote(file), Quote(owner), mode)
	_, err := h.Run(ctx, script, r)
	if err != nil {
		return fmt.Errorf("put %s: %w", file, err)
	}
	return nil
}

// HTTPClient returns a client whose connections go through the SSH
// connection (direct-tcpip), so a node's /readyz is asked on the host
// itself, whatever the firewall lets through.
func (h *Host) HTTPClient(timeout time.Duration, tr *http.Transport) *http.Client {
	if tr == nil {
		tr = &http.Transport{}
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			c, err := h.client.Dial(network, addr)
			ch <- res{c, err}
		}()
		select {
		case r := <-ch:
			return r.c, r.err
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
	tr.DisableKeepAlives = true
	return &http.Client{Transport: tr, Timeout: timeout}
}
