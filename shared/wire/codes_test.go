package wire

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCodeNumbers(t *testing.T) {
	// The numbers are a protocol: client-js and other nodes depend on them.
	for c, want := range map[Code]uint16{
		CodeNormal: 1000, CodeGoingAway: 1001, CodeInternal: 1011,
		CodeBadRequest: 4000, CodeUnauthorized: 4001, CodeForbidden: 4003, CodeNotFound: 4004,
		CodeTooSlow: 4008, CodeConflict: 4009, CodeTooLarge: 4013, CodeInvalidMedia: 4015,
		CodeRateLimited: 4029, CodeTimeout: 4408, CodeOverCapacity: 4503,
		CodeBadGateway: 4502, CodeRemoved: 4410, CodeBarred: 4423,
	} {
		if uint16(c) != want {
			t.Errorf("%s = %d, want %d", c, uint16(c), want)
		}
		if c >= 4000 && c > 4999 || c < 4000 && c > 1015 {
			t.Errorf("%s outside the application range", c)
		}
		if strings.HasPrefix(c.String(), "code ") {
			t.Errorf("code %d has no name", uint16(c))
		}
	}
	if got := Code(4999).String(); got != "code 4999" {
		t.Errorf("unknown code String = %q", got)
	}
	if CodeUnavailable != CodeOverCapacity || CodeUnavailable.String() != "unavailable" {
		t.Errorf("CodeUnavailable = %d %q, want 4503 unavailable", uint16(CodeUnavailable), CodeUnavailable)
	}
	if got := CodeTooSlow.String(); got != "too slow" {
		t.Errorf("CodeTooSlow.String = %q", got)
	}
}

func TestErrorf(t *testing.T) {
	err := Errorf(CodeNotFound, "no broadcast %q", "live/a")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%T is not an *Error", err)
	}
	if e.Code != CodeNotFound || e.Msg != `no broadcast "live/a"` || e.Err != nil {
		t.Fatalf("got %+v", e)
	}
	if got, want := err.Error(), `not found (4004): no broadcast "live/a"`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}

	// %w keeps the cause for errors.Is.
	err = Errorf(CodeInvalidMedia, "chunk 3: %w", io.ErrUnexpectedEOF)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%v does not wrap its cause", err)
	}
	if !errors.As(err, &e) || e.Msg != "chunk 3: unexpected EOF" || e.Err != io.ErrUnexpectedEOF {
		t.Fatalf("got %+v", e)
	}
	// %v does not.
	if err := Errorf(CodeInvalidMedia, "%v", io.EOF); errors.Is(err, io.EOF) {
		t.Fatal("a percent-v verb wrapped its argument")
	}

	// A struct built by hand prints its cause after the message.
	err = &Error{Code: CodeGoingAway, Msg: "publisher connection lost", Err: io.EOF}
	if got, want := err.Error(), "going away (1001): publisher connection lost: EOF"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatal("Unwrap lost the cause")
	}
}

func TestCodeOfAndReason(t *testing.T) {
	werr := Errorf(CodeTooSlow, "fell behind 4 times")
	for _, ca := range []struct {
		name   string
		err    error
		code   Code
		reason string
	}{
		{"wire error", werr, CodeTooSlow, "fell behind 4 times"},
		{"wrapped wire error", fmt.Errorf("viewer 7: %w", werr), CodeTooSlow, "fell behind 4 times"},
		{"joined", errors.Join(io.EOF, werr), CodeTooSlow, "fell behind 4 times"},
		{"plain error leaks nothing", errors.New("open /etc/secret: permission denied"), CodeInternal, "internal error"},
		{"nil", nil, CodeInternal, "internal error"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			if got := CodeOf(ca.err); got != ca.code {
				t.Errorf("CodeOf = %d, want %d", got, ca.code)
			}
			if got := Reason(ca.err); got != ca.reason {
				t.Errorf("Reason = %q, want %q", got, ca.reason)
			}
		})
	}
}

func TestReasonTruncation(t *testing.T) {
	for _, ca := range []struct {
		name string
		msg  string
		want string
	}{
		{"123 bytes kept", strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"124 bytes cut", strings.Repeat("a", 124), strings.Repeat("a", 120) + "..."},
		{"long ascii", strings.Repeat("b", 500), strings.Repeat("b", 120) + "..."},
		{"two-byte runes on the cut", strings.Repeat("é", 100), strings.Repeat("é", 60) + "..."},
		{"two-byte rune split by the cut", "x" + strings.Repeat("é", 100), "x" + strings.Repeat("é", 59) + "..."},
		{"four-byte runes", strings.Repeat("😀", 40), strings.Repeat("😀", 30) + "..."},
		{"four-byte rune split", "ab" + strings.Repeat("😀", 40), "ab" + strings.Repeat("😀", 29) + "..."},
	} {
		t.Run(ca.name, func(t *testing.T) {
			got := Reason(Errorf(CodeBadRequest, "%s", ca.msg))
			if got != ca.want {
				t.Fatalf("Reason = %q (%d bytes), want %q", got, len(got), ca.want)
			}
			if len(got) > 123 {
				t.Fatalf("%d bytes, over the 123-byte close reason limit", len(got))
			}
			if !utf8.ValidString(got) {
				t.Fatalf("%q is not valid UTF-8", got)
			}
			// It fits a close frame unchanged.
			msg := WSCloseMessage(CodeBadRequest, got)
			if string(msg[4:]) != got {
				t.Fatalf("close frame changed the reason: %q", msg[4:])
			}
		})
	}
}
