package media

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest broadcast name, in bytes.
const MaxNameLen = 128

// ErrBadName is wrapped by the errors of ValidName.
var ErrBadName = errors.New("bad broadcast name")

// ValidName checks a broadcast name: segments of [A-Za-z0-9._-] joined by
// '/', at most 128 bytes, no empty, "." or ".." segment.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrBadName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadName, len(name), MaxNameLen)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q has an empty, \".\" or \"..\" segment", ErrBadName, name)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w: %q: character %q not allowed (use A-Z a-z 0-9 . _ - and /)", ErrBadName, name, c)
			}
		}
	}
	return nil
}
