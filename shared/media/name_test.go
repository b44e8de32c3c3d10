package media

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, name := range []string{
		"a", "live/cam-1.hd_2", "A/b/C", "x.y", "...a", "a..", "-_-", "0",
		strings.Repeat("n", 128), strings.Repeat("ab/", 42) + "cd", // 128 bytes with slashes
	} {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want ok", name, err)
		}
	}
	for _, name := range []string{
		"", "a//b", "../x", "x/..", "a/./b", ".", "..", "a b", "é", "caf\xe9", "a\x00", "a\nb", "a\\b", "a?b", "a%2Fb", "a:b",
		strings.Repeat("n", 129), "/a", "a/", "/",
	} {
		err := ValidName(name)
		if !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", name, err)
		}
	}
	if len(strings.Repeat("ab/", 42)+"cd") != 128 {
		t.Fatal("test name is not 128 bytes")
	}
	if err := ValidName(strings.Repeat("n", 129)); !strings.Contains(err.Error(), "129 bytes") {
		t.Errorf("length error %q does not say the length", err)
	}
	if err := ValidName("a b"); !strings.Contains(err.Error(), `' '`) {
		t.Errorf("character error %q does not name the character", err)
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "live/cam-1.hd_2", "a//b", "../x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidName(name) != nil {
			return
		}
		// Whatever passes is safe as a path and a Redis key part.
		if len(name) == 0 || len(name) > MaxNameLen || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
			t.Fatalf("accepted %q", name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q", name)
			}
		}
		for _, c := range []byte(name) {
			if c <= ' ' || c >= 0x7f || strings.IndexByte(`?#%\:*"<>|{}`, c) >= 0 {
				t.Fatalf("accepted %q", name)
			}
		}
	})
}
