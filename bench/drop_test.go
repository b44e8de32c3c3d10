package bench

import (
	"strings"
	"testing"
	"time"
)

// The recovery time is measured to the last late object after the link
// came back, ignoring slots where nothing arrived, and is "never" when the
// window ends late.
func TestTimelineRecoveredAtTheLastLateObject(t *testing.T) {
	var tl timeline
	t0 := time.Unix(1000, 0)
	tl.begin(t0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	target := 150 * time.Millisecond
	tl.record(at(100), 40*time.Millisecond)
	tl.record(at(2000), 3*time.Second) // during the drop
	back := at(2000)
	tl.record(at(2100), 2*time.Second)
	tl.record(at(2610), 400*time.Millisecond) // the last late object: slot 52 ends at 2650 ms
	// nothing arrives 2650–2900 ms: a stall counts neither way
	tl.record(at(2900), 60*time.Millisecond)
	tl.record(at(3000), 200*time.Millisecond/2)
	d, ok := tl.recovered(back, at(4000), target)
	if !ok || d != 650*time.Millisecond {
		t.Fatalf("recovered %s, %v; want 650 ms after the link came back", d, ok)
	}
	// Late until the end: not recovered.
	tl.record(at(3990), time.Second)
	if d, ok := tl.recovered(back, at(4000), target); ok {
		t.Fatalf("recovered %s with the last object late", d)
	}
	// Nothing after the link came back: not recovered either.
	var empty timeline
	empty.begin(t0)
	if _, ok := empty.recovered(back, at(4000), target); ok {
		t.Fatal("recovered with nothing arriving")
	}
}

// A bandwidth drop needs the emulator, and its link change must parse
// before anything starts.
func TestDropNeedsTheEmulator(t *testing.T) {
	_, err := Run(t.Context(), Config{Local: true, Drop: "rate=1mbit", Viewers: 1})
	if err == nil || !strings.Contains(err.Error(), "-drop needs -network") {
		t.Fatalf("got %v, want -drop needs -network", err)
	}
}
