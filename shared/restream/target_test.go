package restream

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTargetHidesTheKey(t *testing.T) {
	for _, ca := range []struct {
		raw, redacted, app, key string
		secrets                 []string
	}{
		{"rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop", "rtmp://a.rtmp.youtube.com/live2/REDACTED", "/live2", "abcd-efgh-ijkl-mnop", []string{"abcd-efgh-ijkl-mnop"}},
		{"rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&a=SeCrEt99", "rtmps://live-api-s.facebook.com:443/rtmp/REDACTED", "/rtmp", "FB-123?s_bl=1&a=SeCrEt99", []string{"FB-123", "SeCrEt99"}},
		{"rtmp://127.0.0.1:1935/live/mirror?key=tok%2Fen", "rtmp://127.0.0.1:1935/live/REDACTED", "/live", "mirror?key=tok%2Fen", []string{"tok/en", "tok%2Fen"}},
		{"rtmp://host/a/b/c/live_sk_123", "rtmp://host/a/b/c/REDACTED", "/a/b/c", "live_sk_123", []string{"live_sk_123"}},
	} {
		t.Run(ca.raw, func(t *testing.T) {
			tg, err := ParseTarget(ca.raw)
			if err != nil {
				t.Fatal(err)
			}
			if tg.String() != ca.redacted || tg.app != ca.app || tg.key != ca.key {
				t.Errorf("String %q app %q key %q", tg.String(), tg.app, tg.key)
			}
			msg := tg.Redact("server said: bad key " + strings.Join(ca.secrets, " and ") + " for " + ca.raw)
			for _, s := range ca.secrets {
				if strings.Contains(msg, s) {
					t.Errorf("Redact left %q in %q", s, msg)
				}
			}
			if id := TargetID("cam/a", tg); !ValidID(id) || id == TargetID("cam/b", tg) {
				t.Errorf("id %q", id)
			}
			again, _ := ParseTarget(tg.Raw())
			if TargetID("cam/a", again) != TargetID("cam/a", tg) {
				t.Error("the id changes when the URL travels through the registry")
			}
		})
	}
	for _, bad := range []string{
		"http://host/live/key-9f8e7d", "rtmp:///live/key-9f8e7d", "rtmp://host/key-9f8e7d", "rtmp://host/live/",
		"rtmp://user:pw-9f8e7d@host/live/key-9f8e7d", "rtmp://host/live/key-9f8e7d#frag", "rtmp://host/live/key-9f8e7d\x7f%zz",
	} {
		_, err := ParseTarget(bad)
		if !errors.Is(err, ErrInvalidURL) {
			t.Errorf("%q: %v, want ErrInvalidURL", bad, err)
		} else if strings.Contains(err.Error(), "9f8e7d") {
			t.Errorf("%q: the error quotes the key: %v", bad, err)
		}
	}
}

func TestRulesTakeKeysFromTheEnvironmentAndFiles(t *testing.T) {
	env := map[string]string{"YT_KEY": "yt-0a1b2c3d", "TW_KEY": "live_123_abc"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	file := filepath.Join(t.TempDir(), "restream.conf")
	os.WriteFile(file, []byte("# twitch\n\ncams/*=rtmp://live.twitch.tv/app/${TW_KEY}\n"), 0o600)
	rules, err := ParseRules("show/*=rtmp://a.rtmp.youtube.com/live2/${YT_KEY}, @"+file, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Target.key != "yt-0a1b2c3d" || rules[1].Target.key != "live_123_abc" ||
		!rules[0].Match("show/main") || rules[0].Match("cams/door") || !rules[1].Match("cams/door") {
		t.Fatalf("rules %+v", rules)
	}
	for spec, want := range map[string]string{
		"show/*=rtmp://h/live2/${NOPE}": "NOPE is not set",
		"rtmp://h/live2/k":              "PATTERN=",
		"[=rtmp://h/live2/k":            "pattern",
		"a=rtmp://h/k-secret-77":        "rtmp://HOST/APP/STREAMKEY",
		"@/nonexistent/restream.conf":   "no such file",
	} {
		_, err := ParseRules(spec, lookup)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret-77") {
			t.Errorf("%q: %v, want an error with %q", spec, err, want)
		}
	}
}

func TestAMFStatusFindsTheRefusal(t *testing.T) {
	amf := func(k, v string) string {
		return "\x00" + string(rune(len(k))) + k + "\x02\x00" + string(rune(len(v))) + v
	}
	ok := amf("level", "status") + amf("code", "NetStream.Publish.Start") + amf("description", "go")
	bad := amf("level", "error") + amf("code", "NetStream.Publish.BadName") + amf("description", "quiccast 4001: no")
	if s := amfStatus([]byte("xx" + ok)); s != "" {
		t.Errorf("accepted publish read as %q", s)
	}
	if s := amfStatus([]byte(ok + "yy" + bad)); s != "NetStream.Publish.BadName: quiccast 4001: no" {
		t.Errorf("refusal read as %q", s)
	}
}

func TestDurationsDoNotOverflow(t *testing.T) {
	// A 90 kHz decode time after 10 years of a broadcast.
	v := uint64(10*365*24*3600) * 90000
	if got, want := toDuration(v+45000, 90000), 10*365*24*time.Hour+500*time.Millisecond; got != want {
		t.Errorf("toDuration = %v, want %v", got, want)
	}
	if got := toDurationSigned(-1500, 48000); got != -31250*time.Microsecond {
		t.Errorf("toDurationSigned = %v", got)
	}
}
