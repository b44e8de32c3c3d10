package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profileNodes fetches a CPU profile of each local node (-pprof) over the
// measured window, in the background; Wait for the files.
func profileNodes(ctx context.Context, cfg *Config, dep *local) *sync.WaitGroup {
	var wg sync.WaitGroup
	if cfg.Profile == "" || dep == nil {
		return &wg
	}
	if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
		cfg.Logger.Warn("bench: profile", "err", err)
		return &wg
	}
	secs := max(1, int(cfg.Duration.Seconds())-1)
	cl := &http.Client{Transport: &http.Transport{DialContext: cfg.dialNodes, TLSClientConfig: cfg.tls}, Timeout: time.Duration(secs+30) * time.Second}
	for _, n := range append([]*node{dep.origin}, dep.edges...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", n.http, secs)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
			resp, err := cl.Do(req)
			if err != nil {
				cfg.Logger.Warn("bench: profile", "node", n.name, "err", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(cfg.Profile, n.name+".cpu.pprof"))
			if err != nil {
				return
			}
			io.Copy(f, resp.Body)
			f.Close()
		}()
	}
	return &wg
}
