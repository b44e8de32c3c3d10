package wire

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Code is a close or error code. The same numbers are WebSocket close codes
// (4000-4999 is the application range, RFC 6455 §7.4.2) and QUIC application
// error codes on the relay and WebTransport.
type Code uint16

// Codes a sender can receive. Numbers in 4000+ mirror HTTP statuses where
// one fits (4004 ~ 404), so they are easy to remember.
const (
	CodeNormal       Code = 1000 // done, nothing wrong
	CodeGoingAway    Code = 1001 // the node is shutting down or draining: reconnect elsewhere
	CodeInternal     Code = 1011 // a bug or an unexpected failure on the node
	CodeBadRequest   Code = 4000 // a malformed request: bad broadcast name, bad message
	CodeUnauthorized Code = 4001 // missing or wrong token
	CodeForbidden    Code = 4003 // token valid, action not allowed
	CodeTokenExpired Code = 4401 // the session's token (its grant) expired: get a fresh token and reconnect
	CodeNotFound     Code = 4004 // no such broadcast (or it ended)
	CodeTooSlow      Code = 4008 // the viewer kept falling behind the live edge
	CodeConflict     Code = 4009 // the broadcast already has a publisher
	CodeTooLarge     Code = 4013 // a message or box over the size limit
	CodeInvalidMedia Code = 4015 // the bytes are not valid CMAF / fragmented MP4
	CodeRateLimited  Code = 4029 // over the byte or message rate limit
	CodeTimeout      Code = 4408 // a publisher sent nothing for too long
	CodeBadGateway   Code = 4502 // the node's upstream refused it (nodes misconfigured): not the sender's fault
	CodeUnavailable  Code = 4503 // the node cannot serve now: over capacity, or its upstream is unreachable
	// CodeOverCapacity is CodeUnavailable sent because the node's memory
	// budget or viewer limit is exhausted.
	CodeOverCapacity = CodeUnavailable
	// CodeRemoved: an operator dropped this publisher or kicked this
	// viewer (the API's drop and kick). A player does not reconnect at once.
	CodeRemoved Code = 4410
	// CodeBarred: an operator barred this broadcast name for a while; a
	// publish is refused until the bar ends.
	CodeBarred Code = 4423
)

var codeNames = map[Code]string{
	CodeNormal:       "normal",
	CodeGoingAway:    "going away",
	CodeInternal:     "internal error",
	CodeBadRequest:   "bad request",
	CodeUnauthorized: "unauthorized",
	CodeForbidden:    "forbidden",
	CodeTokenExpired: "token expired",
	CodeNotFound:     "not found",
	CodeTooSlow:      "too slow",
	CodeConflict:     "conflict",
	CodeTooLarge:     "too large",
	CodeInvalidMedia: "invalid media",
	CodeRateLimited:  "rate limited",
	CodeTimeout:      "timeout",
	CodeBadGateway:   "bad gateway",
	CodeUnavailable:  "unavailable",
	CodeRemoved:      "removed by operator",
	CodeBarred:       "name barred",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Error is an error with a code for the peer and a human message.
type Error struct {
	Code Code
	Msg  string
	Err  error // optional cause
}

func (e *Error) Error() string {
	if e.Err != nil && !strings.Contains(e.Msg, e.Err.Error()) {
		return fmt.Sprintf("%s (%d): %s: %v", e.Code, uint16(e.Code), e.Msg, e.Err)
	}
	return fmt.Sprintf("%s (%d): %s", e.Code, uint16(e.Code), e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message. A %w verb wraps a cause.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// CodeOf returns the code carried by err, or CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Reason returns the human message to send the peer with the code: the
// message of the *Error in err, or a generic one that leaks no internals.
// A WebSocket close reason holds at most 123 bytes, so it is cut there.
func Reason(err error) string {
	var e *Error
	msg := "internal error"
	if errors.As(err, &e) {
		msg = e.Msg
	}
	if len(msg) > 123 {
		cut := 120
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	return msg
}
