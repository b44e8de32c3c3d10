package origin

import (
	"testing"
	"time"
)

// Group numbers from the clock rise with it, at most one per quarter
// second, and fit the 31 bits some HLS clients give EXT-X-MEDIA-SEQUENCE
// until 2043.
func TestGroupFloor(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	if a, b := groupFloor(t0), groupFloor(t0.Add(time.Second)); b != a+4 {
		t.Errorf("groupFloor one second apart: %d, %d; want 4 apart", a, b)
	}
	if g := groupFloor(time.Date(2043, 1, 1, 0, 0, 0, 0, time.UTC)); g >= 1<<31 {
		t.Errorf("groupFloor in 2043 = %d, not below 2^31", g)
	}
	if g := groupFloor(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)); g != 0 {
		t.Errorf("groupFloor before 2026 = %d, want 0", g)
	}
	if e := epochFloor(t0); e != uint64(t0.UnixMilli()) {
		t.Errorf("epochFloor = %d, want Unix ms %d", e, t0.UnixMilli())
	}
}
