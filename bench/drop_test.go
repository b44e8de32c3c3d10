package bench

import (
	"strings"
	"testing"
	"time"
)

// The recovery time runs to the first object within target that starts a
// stretch of a group's length with every object within target; a late
// object after that stretch is another event, and slots where nothing
// arrived count neither way.
func TestTimelineRecoveredAtTheFirstGroupWithinTarget(t *testing.T) {
	var tl timeline
	t0 := time.Unix(1000, 0)
	tl.begin(t0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const target, hold = 150 * time.Millisecond, time.Second
	tl.record(at(100), 40*time.Millisecond)
	tl.record(at(2000), 3*time.Second) // during the drop
	back := at(2000)
	tl.record(at(2100), 2*time.Second)
	tl.record(at(2200), 60*time.Millisecond)  // within target, but not for a group:
	tl.record(at(2610), 400*time.Millisecond) // late again (slot 2600–2650)
	// nothing arrives 2650–2900 ms
	tl.record(at(2900), 60*time.Millisecond) // the stretch starts here
	tl.record(at(3300), 100*time.Millisecond)
	if _, ok := tl.recovered(back, at(3400), target, hold); ok {
		t.Fatal("recovered with less than a group within target")
	}
	tl.record(at(3910), 50*time.Millisecond) // a group's length after 2900 ms
	tl.record(at(3990), time.Second)         // a later, separate event
	d, ok := tl.recovered(back, at(4000), target, hold)
	if !ok || d != 900*time.Millisecond {
		t.Fatalf("recovered %s, %v; want 900 ms after the link came back", d, ok)
	}
	// Nothing after the link came back: not recovered.
	var empty timeline
	empty.begin(t0)
	if _, ok := empty.recovered(back, at(4000), target, hold); ok {
		t.Fatal("recovered with nothing arriving")
	}
}

// A bandwidth drop needs the emulator; this is checked before anything
// starts.
func TestDropNeedsTheEmulator(t *testing.T) {
	_, err := Run(t.Context(), Config{Local: true, Drop: "rate=1mbit", Viewers: 1})
	if err == nil || !strings.Contains(err.Error(), "-drop needs -network") {
		t.Fatalf("got %v, want -drop needs -network", err)
	}
}
