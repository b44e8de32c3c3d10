package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

type settings struct {
	listen   string
	redis    string
	viewers  int
	budget   int64
	drain    bool
	timeout  time.Duration
	maxDelay time.Duration
}

func newSet(env map[string]string) (*Set, *settings, *bytes.Buffer) {
	var s settings
	set := New("edge", "Serve viewers.")
	set.String(&s.listen, "listen", ":8080", "address to listen on")
	set.GlobalString(&s.redis, "redis-url", "", "Redis URL;\nempty for the embedded registry")
	set.Int(&s.viewers, "max-viewers", 10000, "viewer limit")
	set.Int64(&s.budget, "budget", 1<<30, "memory budget in bytes")
	set.Bool(&s.drain, "drain", false, "start draining")
	set.Duration(&s.timeout, "write-timeout", 5*time.Second, "socket write `deadline`")
	set.Duration(&s.maxDelay, "max-delay", 0, "unused")
	set.SetLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	var out bytes.Buffer
	set.SetOutput(&out)
	return set, &s, &out
}

func TestEnvNames(t *testing.T) {
	set, _, _ := newSet(nil)
	for flag, env := range map[string]string{
		"listen": "QC_EDGE_LISTEN", "redis-url": "QC_REDIS_URL", "max-viewers": "QC_EDGE_MAX_VIEWERS",
		"budget": "QC_EDGE_BUDGET", "drain": "QC_EDGE_DRAIN", "write-timeout": "QC_EDGE_WRITE_TIMEOUT",
	} {
		if got := set.Env(flag); got != env {
			t.Errorf("Env(%q) = %q, want %q", flag, got, env)
		}
	}
	var x string
	s2 := New("load-gen", "")
	s2.String(&x, "target-url", "", "")
	if got := s2.Env("target-url"); got != "QC_LOAD_GEN_TARGET_URL" {
		t.Errorf("dashed command: %q", got)
	}
}

func TestDefaults(t *testing.T) {
	set, s, _ := newSet(nil)
	if err := set.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := settings{listen: ":8080", viewers: 10000, budget: 1 << 30, timeout: 5 * time.Second}
	if *s != want {
		t.Fatalf("%+v, want %+v", *s, want)
	}
}

func TestEnvFillsUnsetFlags(t *testing.T) {
	set, s, _ := newSet(map[string]string{
		"QC_EDGE_LISTEN":        "127.0.0.1:9000",
		"QC_REDIS_URL":          "redis://10.0.0.1:6379/0",
		"QC_EDGE_MAX_VIEWERS":   "250",
		"QC_EDGE_BUDGET":        "8589934592",
		"QC_EDGE_DRAIN":         "true",
		"QC_EDGE_WRITE_TIMEOUT": "1.5s",
	})
	if err := set.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := settings{listen: "127.0.0.1:9000", redis: "redis://10.0.0.1:6379/0", viewers: 250, budget: 8 << 30, drain: true, timeout: 1500 * time.Millisecond}
	if *s != want {
		t.Fatalf("%+v, want %+v", *s, want)
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	set, s, _ := newSet(map[string]string{
		"QC_EDGE_LISTEN":        ":1",
		"QC_REDIS_URL":          "redis://env",
		"QC_EDGE_MAX_VIEWERS":   "not a number", // not even looked at: the flag is given
		"QC_EDGE_BUDGET":        "5",
		"QC_EDGE_DRAIN":         "true",
		"QC_EDGE_WRITE_TIMEOUT": "9s",
	})
	err := set.Parse([]string{"-listen", ":2", "-redis-url=redis://flag", "-max-viewers", "7", "-drain=false", "-write-timeout", "200ms", "rest", "-x"})
	if err != nil {
		t.Fatal(err)
	}
	want := settings{listen: ":2", redis: "redis://flag", viewers: 7, budget: 5, drain: false, timeout: 200 * time.Millisecond}
	if *s != want {
		t.Fatalf("%+v, want %+v", *s, want)
	}
	if got := strings.Join(set.Args(), " "); got != "rest -x" {
		t.Fatalf("Args = %q", got)
	}
}

func TestGlobalEnvHasNoPrefix(t *testing.T) {
	set, s, _ := newSet(map[string]string{"QC_EDGE_REDIS_URL": "redis://prefixed"})
	if err := set.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if s.redis != "" {
		t.Fatalf("a global setting read the prefixed variable: %q", s.redis)
	}
}

func TestBoolEnvValues(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "T": true, "false": false, "0": false} {
		set, s, _ := newSet(map[string]string{"QC_EDGE_DRAIN": v})
		s.drain = !want
		if err := set.Parse(nil); err != nil || s.drain != want {
			t.Errorf("QC_EDGE_DRAIN=%q: %v, %v", v, s.drain, err)
		}
	}
}

func TestMalformedEnvNamesTheVariable(t *testing.T) {
	for _, ca := range []struct{ env, value string }{
		{"QC_EDGE_MAX_VIEWERS", "lots"},
		{"QC_EDGE_MAX_VIEWERS", "99999999999999999999"},
		{"QC_EDGE_BUDGET", "1GB"},
		{"QC_EDGE_DRAIN", "yes"},
		{"QC_EDGE_WRITE_TIMEOUT", "5"}, // no unit
	} {
		set, _, _ := newSet(map[string]string{ca.env: ca.value})
		err := set.Parse(nil)
		if err == nil {
			t.Errorf("%s=%q: no error", ca.env, ca.value)
			continue
		}
		if !strings.Contains(err.Error(), ca.env) || !strings.Contains(err.Error(), ca.value) {
			t.Errorf("%s=%q: error %q names neither", ca.env, ca.value, err)
		}
	}
	// Every bad variable is reported, not just the first.
	set, _, _ := newSet(map[string]string{"QC_EDGE_MAX_VIEWERS": "x", "QC_EDGE_WRITE_TIMEOUT": "y"})
	err := set.Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "QC_EDGE_MAX_VIEWERS") || !strings.Contains(err.Error(), "QC_EDGE_WRITE_TIMEOUT") {
		t.Fatalf("two bad variables: %v", err)
	}
}

func TestHelpListsEnvAndDefaults(t *testing.T) {
	set, _, out := newSet(map[string]string{"QC_EDGE_LISTEN": ":7"})
	err := set.Parse([]string{"-h"})
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want ErrHelp", err)
	}
	help := out.String()
	for _, want := range []string{
		"usage: quiccast edge [flags]\n",
		"\nServe viewers.\n",
		"  -listen string\n        address to listen on\n        env QC_EDGE_LISTEN, default \":8080\"\n",
		"  -redis-url string\n        Redis URL;\n        empty for the embedded registry\n        env QC_REDIS_URL, default \"\"\n",
		"  -max-viewers int\n        viewer limit\n        env QC_EDGE_MAX_VIEWERS, default \"10000\"\n",
		"  -budget int\n", "env QC_EDGE_BUDGET, default \"1073741824\"",
		"  -drain\n        start draining\n        env QC_EDGE_DRAIN, default \"false\"\n",
		"  -write-timeout deadline\n        socket write deadline\n        env QC_EDGE_WRITE_TIMEOUT, default \"5s\"\n",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	// Flags are listed in name order.
	if strings.Index(help, "-budget") > strings.Index(help, "-drain") || strings.Index(help, "-redis-url") > strings.Index(help, "-write-timeout") {
		t.Error("flags not sorted")
	}
	if t.Failed() {
		t.Log(help)
	}
}

func TestUnknownFlag(t *testing.T) {
	set, _, out := newSet(nil)
	err := set.Parse([]string{"-nope"})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Parse(-nope) = %v", err)
	}
	if !strings.Contains(out.String(), "usage: quiccast edge") {
		t.Fatalf("no usage after a bad flag: %q", out.String())
	}
}

func TestStringListRepeatsAndSplits(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{nil, "", "ws://a"},
		{[]string{"-url", "ws://b"}, "", "ws://b"},
		{[]string{"-url", "ws://b", "-url", "ws://c,ws://d"}, "", "ws://b,ws://c,ws://d"},
		{nil, "ws://e,ws://f", "ws://e,ws://f"},
		{[]string{"-url", "ws://b"}, "ws://e", "ws://b"},
	} {
		var v string
		s := New("publish", "")
		s.SetLookup(func(k string) (string, bool) { return tc.env, tc.env != "" && k == "QC_PUBLISH_URL" })
		s.StringList(&v, "url", "ws://a", "")
		if err := s.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if v != tc.want {
			t.Errorf("%q env %q: got %q, want %q", tc.args, tc.env, v, tc.want)
		}
	}
}
