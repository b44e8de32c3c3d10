package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestVersionCommandPrintsVersionCommitAndBuildTime(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	for _, w := range []string{"quiccast ", " commit ", " built ", " go1."} {
		if !strings.Contains(s, w) {
			t.Fatalf("version output %q lacks %q", s, w)
		}
	}
}
