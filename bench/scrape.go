package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape of a node's /metrics: each metric name with the
// sum of its series.
type Metrics map[string]float64

// Scrape reads base/metrics (Prometheus text format), with the node's
// admin token when one is given; tc (nil: the defaults) checks an HTTPS
// node's certificate.
func Scrape(ctx context.Context, base, adminToken string, dial Dialer, tc *tls.Config) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	cl := &http.Client{Transport: &http.Transport{DialContext: dial, TLSClientConfig: tc, DisableKeepAlives: true}}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: scrape %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: scrape %s: %s", base, resp.Status)
	}
	m := Metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			_, rest, _ = strings.Cut(line, "} ")
		}
		val, _, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m, sc.Err()
}

// NodeCost is what serving cost one node during the measured window.
type NodeCost struct {
	Name          string  `json:"name"`
	URL           string  `json:"url"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	SentGbit      float64 `json:"sent_gbit"`
	CPUPerGbit    float64 `json:"cpu_seconds_per_gbit"`
	RSSBefore     float64 `json:"rss_before_bytes"`
	RSSAfter      float64 `json:"rss_after_bytes"`
	BytesPerViewr float64 `json:"memory_bytes_per_viewer"`
	// GoroutinesPerViewer is an edge's goroutines at the end against
	// before any viewer joined, over its viewers.
	GoroutinesPerViewer float64 `json:"goroutines_per_viewer,omitempty"`
}

// cost compares two scrapes; sent names the node's byte counters (summed).
func cost(name, url string, before, after Metrics, sent []string, viewers int) NodeCost {
	var bytes float64
	for _, k := range sent {
		bytes += after[k] - before[k]
	}
	c := NodeCost{Name: name, URL: url,
		CPUSeconds: after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"],
		SentGbit:   bytes * 8 / 1e9,
		RSSBefore:  before["process_resident_memory_bytes"], RSSAfter: after["process_resident_memory_bytes"]}
	if c.SentGbit > 0 {
		c.CPUPerGbit = c.CPUSeconds / c.SentGbit
	}
	if viewers > 0 {
		c.BytesPerViewr = (c.RSSAfter - c.RSSBefore) / float64(viewers)
	}
	return c
}
