package origin

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/restream"
	"github.com/quiccast/quiccast/shared/testenv"
)

// An origin pushes a WebSocket-published broadcast (the demo clip) to
// another origin's RTMP ingest by a -restream rule whose key comes from the
// environment; restream and restream-stop events (the cluster API asked on
// another node) add and remove targets; neither origin logs the key.
func TestRestreamPushesToAnotherOriginAndFollowsEvents(t *testing.T) {
	const key = "k3y-b-5e1f0a9d"
	b, blogs := startRTMPOrigin(t, Config{PublishTokens: key})
	env := map[string]string{"B_KEY": key}
	a, alogs := startOrigin(t, Config{Restream: restream.Config{
		Rules:  fmt.Sprintf("cams/*=rtmp://%s/live/mirror?key=${B_KEY}", b.RTMPAddr()),
		Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}})
	startControl(t, a, "cams/door")
	groups := func(name string) int {
		bc, ok := b.Lookup(name)
		if !ok {
			return 0
		}
		return len(bc.Groups(0))
	}
	testenv.WaitFor(t, 20*time.Second, "mirror on B", func() bool { return groups("mirror") >= 2 })
	list := a.Restreamer().List()
	if len(list) != 1 || list[0].State != restream.StateLive || list[0].Source != "config" || list[0].Bytes == 0 {
		t.Fatalf("restreams %+v", list)
	}
	if got := testenv.Metric(t, a.Registry(), "quiccast_origin_restream_state", "target_id", list[0].ID, "state", "live"); got != 1 {
		t.Errorf("state{live} = %v", got)
	}

	// Another node's API asked for a second target, then for the first
	// one to stop.
	a.restreamEvent(registry.Event{Type: registry.EventRestream, Broadcast: "cams/door", Node: "edge-9",
		Target: fmt.Sprintf("rtmp://%s/live/second?key=%s", b.RTMPAddr(), key)})
	testenv.WaitFor(t, 20*time.Second, "second on B", func() bool { return groups("second") >= 1 })
	a.restreamEvent(registry.Event{Type: registry.EventRestreamStop, Broadcast: "cams/door", Node: "edge-9", Target: list[0].ID})
	for _, st := range a.Restreamer().List() {
		switch {
		case st.ID == list[0].ID && (st.Active || st.State != restream.StateStopped):
			t.Errorf("stopped target: %+v", st)
		case st.ID != list[0].ID && (!st.Active || st.Source != "api"):
			t.Errorf("added target: %+v", st)
		}
	}
	if n := len(blogs.Lines("publish refused")); n != 0 {
		t.Errorf("B refused %d publishes", n)
	}
	for who, l := range map[string]*testenv.Logs{"A": alogs, "B": blogs} {
		if lines := l.Lines(key); len(lines) != 0 {
			t.Errorf("%s logged the key: %s", who, strings.Join(lines, "\n"))
		}
	}
}

// Over RTMPS the target's certificate is checked: with -restream-ca the
// push goes live; without it the target is refused (a certificate does
// not fix itself), with the verification error.
func TestRestreamOverRTMPSChecksTheCertificate(t *testing.T) {
	cert, key := writeTestCert(t, t.TempDir())
	b, _ := startRTMPOrigin(t, Config{RTMPCert: cert, RTMPKey: key})
	url := fmt.Sprintf("rtmps://%s/live/secure", b.RTMPAddr())
	for _, ca := range []struct {
		name, caFile, state, err string
	}{
		{"with the CA", cert, restream.StateLive, ""},
		{"without it", "", restream.StateRefused, "certificate signed by unknown authority"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			a, _ := startOrigin(t, Config{Restream: restream.Config{CAFile: ca.caFile}})
			name := "cams/" + strings.ReplaceAll(ca.name, " ", "-")
			startControl(t, a, name)
			testenv.WaitFor(t, 5*time.Second, "the broadcast", func() bool { _, ok := a.Lookup(name); return ok })
			st, err := a.Restreamer().Add(name, url)
			if err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 20*time.Second, "state "+ca.state, func() bool {
				for _, s := range a.Restreamer().List() {
					if s.ID == st.ID {
						st = s
					}
				}
				return st.State == ca.state
			})
			if !strings.Contains(st.LastError, ca.err) {
				t.Errorf("last error %q, want %q", st.LastError, ca.err)
			}
		})
	}
	bc, ok := b.Lookup("secure")
	if !ok || len(bc.Groups(0)) == 0 {
		t.Error("nothing reached B over RTMPS")
	}
}
