package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/quiccast/quiccast/shared/wire"
)

// hlsPlaylist is what an LL-HLS client needs of a media playlist: the open
// segment's program date-time and part durations, and the preload hint.
type hlsPlaylist struct {
	pdt        time.Time // of the last segment listed (the open one)
	partDurs   []float64 // parts listed after that date-time
	hint       string    // URI of the next part
	hintGroup  uint64
	hintPart   int
	hasHint    bool
	targetPart float64
}

// parseHLS reads the tags of a media playlist this edge writes.
func parseHLS(r io.Reader) (*hlsPlaylist, error) {
	p := &hlsPlaylist{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:"):
			t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:"))
			if err != nil {
				return nil, fmt.Errorf("bench: hls: %q: %w", line, err)
			}
			p.pdt, p.partDurs = t, p.partDurs[:0]
		case strings.HasPrefix(line, "#EXT-X-PART:"):
			if d, ok := attr(line, "DURATION"); ok {
				f, _ := strconv.ParseFloat(d, 64)
				p.partDurs = append(p.partDurs, f)
			}
		case strings.HasPrefix(line, "#EXT-X-PART-INF:"):
			if d, ok := attr(line, "PART-TARGET"); ok {
				p.targetPart, _ = strconv.ParseFloat(d, 64)
			}
		case strings.HasPrefix(line, "#EXT-X-PRELOAD-HINT:"):
			u, ok := attr(line, "URI")
			if !ok {
				continue
			}
			p.hint = strings.Trim(u, `"`)
			// part-{inst}-{track}-{group}-{i}.m4s
			f := strings.Split(strings.TrimSuffix(p.hint, ".m4s"), "-")
			if len(f) < 5 {
				return nil, fmt.Errorf("bench: hls: preload hint %q", p.hint)
			}
			g, err1 := strconv.ParseUint(f[len(f)-2], 10, 64)
			i, err2 := strconv.Atoi(f[len(f)-1])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bench: hls: preload hint %q", p.hint)
			}
			p.hintGroup, p.hintPart, p.hasHint = g, i, true
		}
	}
	return p, sc.Err()
}

func attr(line, key string) (string, bool) {
	for _, kv := range strings.Split(line[strings.IndexByte(line, ':')+1:], ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// capture estimates when the hinted part's first frame was captured: the
// open segment's date-time plus the parts before it.
func (p *hlsPlaylist) capture() time.Time {
	var s float64
	for _, d := range p.partDurs {
		s += d
	}
	return p.pdt.Add(time.Duration(s * float64(time.Second)))
}

// runHLSViewer follows an LL-HLS stream like a low-latency player: it
// fetches each preload-hinted part (the request waits until the part
// exists), then reloads the playlist with _HLS_msn/_HLS_part naming that
// part, which answers at once with the next hint. Latency is the part's arrival against its capture time as the
// playlist's program date-time gives it.
func runHLSViewer(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network) {
	t := &tracker{st: st, shard: id, started: time.Now()}
	cl := &http.Client{Transport: &http.Transport{DialContext: nw.dial, MaxConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	base := strings.TrimSuffix(edge, "/") + "/hls/" + name + "/"
	q := url.Values{}
	if token != "" {
		q.Set("token", token)
	}
	get := func(u string, extra url.Values) (*http.Response, error) {
		v := url.Values{}
		for k, x := range q {
			v[k] = x
		}
		for k, x := range extra {
			v[k] = x
		}
		if len(v) > 0 {
			u += "?" + v.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := cl.Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				return nil, fmt.Errorf("GET %s: %w", u, errNotFound)
			}
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		return resp, err
	}
	playlist := func(extra url.Values) (*hlsPlaylist, error) {
		resp, err := get(base+"index.m3u8", extra)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return parseHLS(resp.Body)
	}
	p, err := playlist(nil)
	if err != nil || !p.hasHint {
		st.Failed.Add(1)
		return
	}
	for ctx.Err() == nil {
		at := p.capture()
		resp, err := get(base+p.hint, nil)
		if errors.Is(err, errNotFound) {
			// The hinted part will not exist: its group ended first.
			// Wait for the next group's first part instead.
			np, err := playlist(url.Values{"_HLS_msn": {fmt.Sprint(p.hintGroup + 1)}, "_HLS_part": {"0"}})
			if err != nil {
				break
			}
			p = np
			continue
		}
		if err != nil {
			break
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		now := time.Now()
		if err != nil {
			break
		}
		h := wire.Header{Kind: wire.KindObject, Group: p.hintGroup, Index: uint32(p.hintPart), Capture: at.UnixMicro(), Length: uint32(n)}
		t.object(h, now)
		// The playlist that lists the part just fetched comes at once
		// and hints the next one, whose request then waits for it.
		next := url.Values{"_HLS_msn": {fmt.Sprint(p.hintGroup)}, "_HLS_part": {fmt.Sprint(p.hintPart)}, "_HLS_skip": {"YES"}}
		np, err := playlist(next)
		if err != nil {
			break
		}
		p = np
	}
	if t.joined {
		st.Active.Add(-1)
	}
	if ctx.Err() == nil {
		st.Disconnects.Add(1)
	}
}

var errNotFound = errors.New("404 not found")
