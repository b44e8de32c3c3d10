package record

import (
	"os"
	"path/filepath"
	"sort"
	"time"
)

// retainEvery is how often retention runs.
const retainEvery = 10 * time.Second

func (r *Recorder) retain() {
	defer r.wg.Done()
	t := time.NewTicker(retainEvery)
	defer t.Stop()
	for {
		r.Retain()
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
	}
}

// Retain deletes the segments retention says must go: older than
// RetentionAge, then the oldest until all recordings fit RetentionBytes.
// A recording left with no segment, and no longer written, is removed.
// It runs every 10 s; tests call it directly.
func (r *Recorder) Retain() {
	r.retainMu.Lock()
	defer r.retainMu.Unlock()
	r.m.setFree(r.free())
	recs, err := List(r.cfg.Dir)
	if err != nil {
		r.log.Warn("retention: cannot list recordings", "err", err)
		return
	}
	type ref struct{ rec, seg int }
	var all []ref
	var total int64
	for i, rec := range recs {
		total += rec.Bytes()
		for j := range rec.Segments {
			all = append(all, ref{i, j})
		}
	}
	sort.SliceStable(all, func(a, b int) bool {
		return recs[all[a].rec].Segments[all[a].seg].Start.Before(recs[all[b].rec].Segments[all[b].seg].Start)
	})
	cut := make([]int, len(recs)) // per recording: how many head segments go
	now := time.Now()
	for _, x := range all {
		s := &recs[x.rec].Segments[x.seg]
		old := r.cfg.RetentionAge > 0 && now.Sub(s.End()) > r.cfg.RetentionAge
		big := r.cfg.RetentionBytes > 0 && total > r.cfg.RetentionBytes
		if !old && !big {
			break
		}
		if x.seg+1 > cut[x.rec] {
			for k := cut[x.rec]; k <= x.seg; k++ {
				total -= recs[x.rec].Segments[k].Bytes
			}
			cut[x.rec] = x.seg + 1
		}
	}
	r.mu.Lock()
	writing := map[string]bool{}
	for _, w := range r.active {
		writing[w.dir] = true
	}
	r.mu.Unlock()
	for i, rec := range recs {
		k := cut[i]
		if k == 0 && (len(rec.Segments) > 0 || writing[rec.Dir]) {
			continue
		}
		var freed int64
		for _, s := range rec.Segments[:k] {
			if err := os.Remove(filepath.Join(rec.Dir, s.File)); err == nil || os.IsNotExist(err) {
				freed += s.Bytes
			}
		}
		if k > 0 {
			r.m.deleted.Add(float64(k))
			r.m.deletedBytes.Add(float64(freed))
			r.log.Info("retention deleted segments", "broadcast", rec.Name, "id", rec.ID, "segments", k, "bytes", freed)
		}
		if k == len(rec.Segments) && !writing[rec.Dir] {
			os.RemoveAll(rec.Dir)
			removeEmptyParents(filepath.Dir(rec.Dir), r.cfg.Dir)
			continue
		}
		if k > 0 {
			if err := appendIndex(rec.Dir, line{T: "trim", N: rec.Segments[k-1].N + 1}); err != nil {
				r.m.errors.Inc()
				r.log.Warn("retention: index not updated", "dir", rec.Dir, "err", err)
			}
		}
	}
}

// removeEmptyParents removes dir and its parents up to (not including)
// root while they are empty.
func removeEmptyParents(dir, root string) {
	root = filepath.Clean(root)
	for dir = filepath.Clean(dir); dir != root && len(dir) > len(root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return
		}
	}
}
