package wire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	cat := &Catalog{Broadcast: "live/cam-1", Epoch: 3, Tracks: []TrackInfo{
		{ID: 0, Kind: "muxed", Codec: "avc1.4D401E,mp4a.40.2", MimeType: `video/mp4; codecs="avc1.4D401E,mp4a.40.2"`,
			Timescale: 15360, Width: 320, Height: 180, SampleRate: 48000, Channels: 2},
		{ID: 1, Kind: "audio", Codec: "opus", MimeType: `audio/mp4; codecs="opus"`, Timescale: 48000, SampleRate: 48000, Channels: 2},
	}}
	for _, m := range []Message{
		{Type: MsgCatalog, Catalog: cat},
		{Type: MsgSkip, Track: 1, From: 10, To: 14},
		{Type: MsgEnded, Reason: "publisher left"},
		{Type: MsgGoAway, URL: "https://edge-2.example/ws/live"},
		{Type: MsgError, Code: CodeTooSlow, Reason: "too slow"},
		{Type: MsgReady},
	} {
		t.Run(m.Type, func(t *testing.T) {
			b := m.Marshal()
			got, err := ParseMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, m) {
				t.Fatalf("round trip of %s:\n got %+v\nwant %+v", b, *got, m)
			}
		})
	}
}

func TestMessageJSONLayout(t *testing.T) {
	// The JSON names are shared with client-js.
	for _, ca := range []struct {
		m    Message
		want string
	}{
		{Message{Type: MsgReady}, `{"type":"ready"}`},
		{Message{Type: MsgSkip, Track: 2, From: 5, To: 7}, `{"type":"skip","track":2,"from":5,"to":7}`},
		{Message{Type: MsgError, Code: CodeUnauthorized, Reason: "no token"}, `{"type":"error","code":4001,"reason":"no token"}`},
		{Message{Type: MsgGoAway, URL: "u"}, `{"type":"goaway","url":"u"}`},
		{Message{Type: MsgCatalog, Catalog: &Catalog{Broadcast: "b", Epoch: 1, Tracks: []TrackInfo{
			{ID: 0, Kind: "video", Codec: "avc1.42E01E", MimeType: "video/mp4", Timescale: 90000, Width: 640, Height: 360},
		}}}, `{"type":"catalog","catalog":{"broadcast":"b","epoch":1,"tracks":[{"id":0,"kind":"video","codec":"avc1.42E01E","mimeType":"video/mp4","timescale":90000,"width":640,"height":360}]}}`},
	} {
		if got := string(ca.m.Marshal()); got != ca.want {
			t.Errorf("Marshal = %s\n     want %s", got, ca.want)
		}
	}
}

func TestParseMessageErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `"catalog"`, `{}`, `{"type":""}`, `{"type":5}`, `{"track":1}`, `{"type":"skip","track":-1}`, `{"type":"skip","from":"x"}`} {
		if m, err := ParseMessage([]byte(in)); err == nil {
			t.Errorf("ParseMessage(%q) = %+v, want an error", in, m)
		} else if !strings.HasPrefix(err.Error(), "wire: control message") {
			t.Errorf("ParseMessage(%q): error %q lacks context", in, err)
		}
	}
	// Unknown fields and types are accepted so that old nodes ignore new
	// things.
	m, err := ParseMessage([]byte(`{"type":"future","extra":{"a":1},"track":3}`))
	if err != nil || m.Type != "future" || m.Track != 3 {
		t.Fatalf("ParseMessage(future) = %+v, %v", m, err)
	}
	var raw map[string]any
	if err := json.Unmarshal((&Message{Type: MsgEnded}).Marshal(), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("empty fields are not omitted: %v %v", raw, err)
	}
}
