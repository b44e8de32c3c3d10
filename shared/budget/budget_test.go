package budget

import (
	"runtime/debug"
	"sync"
	"testing"
)

func TestReserveRelease(t *testing.T) {
	b := New(100)
	if b.Limit() != 100 || b.Used() != 0 || b.Peak() != 0 {
		t.Fatalf("new budget: limit %d used %d peak %d", b.Limit(), b.Used(), b.Peak())
	}
	for _, st := range []struct {
		reserve, release int64
		ok               bool
		used, peak       int64
	}{
		{reserve: 60, ok: true, used: 60, peak: 60},
		{reserve: 41, ok: false, used: 60, peak: 60},  // over by one
		{reserve: 40, ok: true, used: 100, peak: 100}, // exactly full
		{reserve: 1, ok: false, used: 100, peak: 100},
		{reserve: 0, ok: true, used: 100, peak: 100}, // nothing always fits
		{release: 70, used: 30, peak: 100},
		{reserve: 50, ok: true, used: 80, peak: 100},
		{release: 80, used: 0, peak: 100},
	} {
		if st.release > 0 {
			b.Release(st.release)
		} else if ok := b.Reserve(st.reserve); ok != st.ok {
			t.Fatalf("Reserve(%d) = %v at %d used", st.reserve, ok, b.Used())
		}
		if b.Used() != st.used || b.Peak() != st.peak {
			t.Fatalf("after %+v: used %d peak %d", st, b.Used(), b.Peak())
		}
	}
}

func TestUnlimited(t *testing.T) {
	for _, b := range []*Budget{New(0), New(-5), {}} {
		if !b.Reserve(1<<50) || !b.Reserve(1<<50) || b.Used() != 1<<51 || b.Limit() > 0 {
			t.Fatalf("unlimited budget refused or miscounted: used %d", b.Used())
		}
		b.Release(1 << 51)
		if b.Used() != 0 || b.Peak() != 1<<51 {
			t.Fatalf("used %d peak %d", b.Used(), b.Peak())
		}
	}
}

func TestMisusePanics(t *testing.T) {
	for name, f := range map[string]func(b *Budget){
		"negative reserve":       func(b *Budget) { b.Reserve(-1) },
		"release more than held": func(b *Budget) { b.Reserve(10); b.Release(11) },
		"release with nothing":   func(b *Budget) { b.Release(1) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f(New(100))
		})
	}
}

func TestConcurrentNeverOverLimit(t *testing.T) {
	const limit, workers, rounds = 1000, 8, 5000
	b := New(limit)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(n int64) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				if b.Reserve(n) {
					if u := b.Used(); u > limit {
						t.Errorf("used %d over the limit", u)
					}
					b.Release(n)
				}
			}
		}(int64(w*37 + 100))
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("used %d after every release", b.Used())
	}
	if p := b.Peak(); p > limit || p < 100 {
		t.Fatalf("peak %d", p)
	}
}

// TestHeadroomIsForInputOnly checks that Reserve leaves the headroom free
// and ReserveInput may use it, within the one limit.
func TestHeadroomIsForInputOnly(t *testing.T) {
	b := New(100).SetHeadroom(20)
	if !b.Reserve(80) || b.Reserve(1) {
		t.Fatalf("Reserve took the headroom: used %d", b.Used())
	}
	if !b.ReserveInput(20) || b.ReserveInput(1) || b.Used() != 100 {
		t.Fatalf("ReserveInput: used %d, want 100 and no more", b.Used())
	}
	b.Release(30) // 70 used: 10 left for caches, 30 for input
	if b.Reserve(11) || !b.Reserve(10) || !b.ReserveInput(20) || b.ReserveInput(1) {
		t.Fatalf("after release: used %d", b.Used())
	}
	if b.Peak() != 100 || b.Headroom() != 20 {
		t.Fatalf("peak %d headroom %d", b.Peak(), b.Headroom())
	}
	// Unlimited stays unlimited.
	u := New(0).SetHeadroom(10)
	if !u.Reserve(1<<40) || !u.ReserveInput(1<<40) {
		t.Fatal("unlimited budget refused")
	}
}

// TestLimitProcess checks that the Go runtime's soft memory limit follows
// the budgets, and that GOMEMLIMIT wins.
func TestLimitProcess(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetMemoryLimit(before)
		processMu.Lock()
		processTotal = 0
		processMu.Unlock()
	})
	processTotal = 0
	LimitProcess(New(0)) // unlimited: nothing
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("unlimited budget set the limit to %d", got)
	}
	LimitProcess(New(400 << 20))
	LimitProcess(New(400 << 20))
	if got, want := debug.SetMemoryLimit(-1), int64(1000<<20+processAllowance); got != want {
		t.Fatalf("limit %d, want %d", got, want)
	}
	t.Setenv("GOMEMLIMIT", "2GiB")
	LimitProcess(New(1 << 30))
	if got := debug.SetMemoryLimit(-1); got != 1000<<20+processAllowance {
		t.Fatalf("with GOMEMLIMIT set: limit %d", got)
	}
}
