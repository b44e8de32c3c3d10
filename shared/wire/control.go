package wire

import (
	"encoding/json"
	"fmt"
)

// Catalog lists a broadcast's tracks. It is sent before any init segment or
// object, and again whenever it changes (a new epoch).
type Catalog struct {
	Broadcast string      `json:"broadcast"`
	Epoch     uint64      `json:"epoch"` // rises each time a publisher (re)starts the broadcast
	Tracks    []TrackInfo `json:"tracks"`

	// Started is when the broadcast started, µs since the Unix epoch. It
	// stays the same across epochs; with the name it tells this broadcast
	// from an earlier one of the same name (names are reused).
	Started int64 `json:"started,omitempty"`
}

// TrackInfo describes one track.
type TrackInfo struct {
	ID        uint16 `json:"id"`
	Kind      string `json:"kind"`  // "video", "audio" or "muxed" (several media in one CMAF track)
	Codec     string `json:"codec"` // RFC 6381 codecs value, comma-separated when muxed: "avc1.64001f,mp4a.40.2"
	MimeType  string `json:"mimeType"`
	Timescale uint32 `json:"timescale"` // units per second of DecodeTime
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	// SampleRate and Channels describe the audio of an audio or muxed track.
	SampleRate int `json:"sampleRate,omitempty"`
	Channels   int `json:"channels,omitempty"`
}

// Message types sent as JSON text (WebSocket) or on the control stream.
const (
	MsgCatalog = "catalog" // Catalog set; init frames follow
	MsgSkip    = "skip"    // the viewer fell behind: objects of groups From..To-1 of Track were not sent
	MsgEnded   = "ended"   // the publisher left; the broadcast may come back (Reason says)
	MsgGoAway  = "goaway"  // this node is draining: reconnect (to URL, if set)
	MsgError   = "error"   // Code and Reason; the connection closes after it
	MsgReady   = "ready"   // to a publisher: the broadcast is accepted
)

// Message is one control message. Fields other than Type are set per type.
type Message struct {
	Type    string   `json:"type"`
	Catalog *Catalog `json:"catalog,omitempty"`
	Track   uint16   `json:"track,omitempty"`
	From    uint64   `json:"from,omitempty"`
	To      uint64   `json:"to,omitempty"`
	Code    Code     `json:"code,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	URL     string   `json:"url,omitempty"`
}

// Marshal encodes m as JSON.
func (m *Message) Marshal() []byte {
	b, err := json.Marshal(m)
	if err != nil { // only fails on unsupported types, which Message has none of
		panic(fmt.Sprintf("wire: marshal %s: %v", m.Type, err))
	}
	return b
}

// ParseMessage decodes a control message and checks that it has a type.
func ParseMessage(b []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("wire: control message: %w", err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("wire: control message without a type")
	}
	return &m, nil
}
