package restream

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/quiccast/quiccast/shared/media"
)

// ErrInvalidURL: a target URL that is not rtmp:// or rtmps:// with a host
// and a stream key.
var ErrInvalidURL = errors.New("restream: invalid target URL")

// maxURL bounds a target URL.
const maxURL = 2048

// Target is one RTMP(S) endpoint a broadcast is pushed to:
// rtmp[s]://host[:port]/app[/…]/STREAMKEY[?query]. The last
// path element (with the query) is the stream key, the rest the
// application, as OBS and the platforms split them ("Server" and "Stream
// Key"). The key and every query value are secrets: they
// never reach a log, an error, the API or a metric.
type Target struct {
	u       *url.URL
	app     string // path without the key, e.g. "/live2"
	key     string // last path element, plus "?query"
	secrets []string
	id      string
}

// ParseTarget checks raw and returns its target. Its error never quotes
// the key.
func ParseTarget(raw string) (*Target, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > maxURL {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, maxURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, key and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	if u.Scheme != "rtmp" && u.Scheme != "rtmps" {
		return nil, fmt.Errorf("%w: scheme %q, want rtmp or rtmps", ErrInvalidURL, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: user:password@ is not supported; the stream key goes in the path", ErrInvalidURL)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: a fragment (#) is not part of an RTMP URL", ErrInvalidURL)
	}
	p := strings.TrimSuffix(u.Path, "/")
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || i == len(p)-1 {
		return nil, fmt.Errorf("%w: want rtmp://HOST/APP/STREAMKEY (an application and a stream key)", ErrInvalidURL)
	}
	t := &Target{u: u, app: p[:i], key: p[i+1:]}
	if u.RawQuery != "" {
		t.key += "?" + u.RawQuery
	}
	t.secrets = append(t.secrets, p[i+1:])
	if esc := url.PathEscape(p[i+1:]); esc != p[i+1:] {
		t.secrets = append(t.secrets, esc)
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			if v != "" {
				t.secrets = append(t.secrets, v, url.QueryEscape(v))
			}
		}
	}
	if u.RawQuery != "" {
		t.secrets = append(t.secrets, u.RawQuery)
	}
	// Longest first, so a secret that contains another is hidden whole.
	for a := range t.secrets {
		for b := a + 1; b < len(t.secrets); b++ {
			if len(t.secrets[b]) > len(t.secrets[a]) {
				t.secrets[a], t.secrets[b] = t.secrets[b], t.secrets[a]
			}
		}
	}
	return t, nil
}

// TargetID is the target's id for broadcast: the first 12 hex digits of
// SHA-256 over the broadcast's name and the URL. It names the target in
// the API and in metric labels without saying anything of the key, and it
// is the same on every node, so the node that takes an API request can
// answer with it.
func TargetID(broadcast string, t *Target) string {
	h := sha256.Sum256([]byte(broadcast + "\n" + t.u.String()))
	return hex.EncodeToString(h[:6])
}

// Scheme is "rtmp" or "rtmps".
func (t *Target) Scheme() string { return t.u.Scheme }

// Host is host:port as written.
func (t *Target) Host() string { return t.u.Host }

// String is the URL with its secrets hidden: the stream key, the password
// and the query values become REDACTED.
func (t *Target) String() string {
	v := *t.u
	v.RawQuery, v.ForceQuery = "", false
	v.Path, v.RawPath = t.app+"/REDACTED", ""
	return v.String()
}

// Redact hides every secret of the target in s: for errors and anything
// else that may quote the URL or the key (a server's refusal often does).
func (t *Target) Redact(s string) string {
	for _, sec := range t.secrets {
		if len(sec) >= 3 { // "a" or "k1" are too short to hunt for in text
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}

// dialAddr is host:port, with RTMP's default port (1935, RTMPS 443).
func (t *Target) dialAddr() string {
	if t.u.Port() != "" {
		return t.u.Host
	}
	if t.u.Scheme == "rtmps" {
		return net.JoinHostPort(t.u.Hostname(), "443")
	}
	return net.JoinHostPort(t.u.Hostname(), "1935")
}

func checkName(name string) error { return media.ValidName(name) }

// Raw is the URL as given, key and all: only for the registry event that
// carries it to the node holding the broadcast. Never log it.
func (t *Target) Raw() string { return t.u.String() }

// ValidID reports whether id has the form of a target id.
func ValidID(id string) bool {
	if len(id) != 12 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
