// Package budget counts bytes held against a process-wide limit.
//
// Whoever keeps media bytes reserves them here before keeping them and
// releases them at the point where it drops them, so the count is what the
// process really holds, not an estimate.
package budget

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Budget is a byte limit shared by many holders. The zero value has no
// limit. It is safe for concurrent use.
//
// Two kinds of holder share it. Caches keep bytes for long and can drop
// their oldest to make room; they Reserve, which leaves the headroom free.
// Input being received (a box not yet whole) is held briefly and cannot
// be dropped; it uses ReserveInput, which may take the headroom too, so
// full caches never starve a publisher's next chunk.
type Budget struct {
	limit    int64
	headroom int64
	used     atomic.Int64
	peak     atomic.Int64
}

// New returns a Budget of limit bytes; limit <= 0 means unlimited.
func New(limit int64) *Budget { return &Budget{limit: limit} }

// SetHeadroom keeps h bytes of the limit for ReserveInput alone. Call it
// before the Budget is shared. It returns b.
func (b *Budget) SetHeadroom(h int64) *Budget {
	b.headroom = max(h, 0)
	return b
}

// Reserve takes n bytes if they fit under the limit less the headroom and
// reports whether they did.
func (b *Budget) Reserve(n int64) bool { return b.reserve(n, b.limit-b.headroom) }

// ReserveInput takes n bytes if they fit under the whole limit and reports
// whether they did: for input in progress, which has the headroom too.
func (b *Budget) ReserveInput(n int64) bool { return b.reserve(n, b.limit) }

func (b *Budget) reserve(n, limit int64) bool {
	if n < 0 {
		panic(fmt.Sprintf("budget: reserve %d", n))
	}
	for {
		u := b.used.Load()
		if b.limit > 0 && u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

// Release gives back n bytes taken with Reserve.
func (b *Budget) Release(n int64) {
	if v := b.used.Add(-n); v < 0 {
		panic(fmt.Sprintf("budget: released more than reserved (now %d)", v))
	}
}

// Used returns the bytes held now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Peak returns the most bytes ever held at once.
func (b *Budget) Peak() int64 { return b.peak.Load() }

// Limit returns the limit, 0 for none.
func (b *Budget) Limit() int64 { return b.limit }

// Headroom returns the bytes kept for ReserveInput.
func (b *Budget) Headroom() int64 { return b.headroom }

var (
	processMu    sync.Mutex
	processTotal int64
)

// processAllowance is what a process holds besides its budgets: code,
// goroutines, sockets' buffers, maps.
const processAllowance = 256 << 20

// LimitProcess tells the Go runtime to keep the process near what its
// budgets allow: the soft memory limit becomes the sum of the limits of
// the budgets given here, plus a quarter for the garbage of buffers that
// grew, plus a fixed allowance. Without it a heap of live bytes at the
// budget may grow to twice that before the collector runs. A GOMEMLIMIT in
// the environment wins. Unlimited budgets set nothing.
func LimitProcess(b *Budget) {
	if b.limit <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	processMu.Lock()
	defer processMu.Unlock()
	processTotal += b.limit
	debug.SetMemoryLimit(processTotal + processTotal/4 + processAllowance)
}
