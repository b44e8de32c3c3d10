package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

func TestHookWithPostgres(t *testing.T) {
	k := testenv.StartKeyServer(t)
	u := k.URL
	h, err := New(Config{OnPublish: u + "/on_publish", OnDone: u + "/on_done", CacheTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := func(key string) auth.Request {
		return auth.Request{Action: auth.Publish, Broadcast: "cam", Token: key, Remote: "127.0.0.1:5555", App: "live",
			URL: "rtmp://127.0.0.1/live/cam?key=REDACTED", FlashVer: "FMLE/3.0", Args: url.Values{"key": {key}, "extra": {"1"}}}
	}
	g, err := h.Decide(ctx, req("good"))
	if err != nil || g.Name != "" {
		t.Fatalf("good key: %+v %v", g, err)
	}
	if _, err := h.Decide(ctx, req("bad")); wire.CodeOf(err) != wire.CodeForbidden {
		t.Fatalf("bad key: %v, want forbidden", err)
	}
	if _, err := h.Decide(ctx, req("unknown")); wire.CodeOf(err) != wire.CodeForbidden {
		t.Fatalf("unknown key: %v", err)
	}
	if g, err := h.Decide(ctx, req("alias")); err != nil || g.Name != "renamed" {
		t.Fatalf("renaming key: %+v %v", g, err)
	}
	f := k.Forms()[0]
	for field, want := range map[string]string{"call": "publish", "addr": "127.0.0.1", "app": "live", "name": "cam", "key": "good", "extra": "1",
		"tcurl": "rtmp://127.0.0.1/live/cam?key=REDACTED", "flashver": "FMLE/3.0", "type": "live", "clientid": "1"} {
		if got := f.Get(field); got != want {
			t.Errorf("form field %s = %q, want %q", field, got, want)
		}
	}
	for _, field := range []string{"swfurl", "pageurl"} {
		if _, ok := f[field]; !ok {
			t.Errorf("form lacks %s", field)
		}
	}
	// An allow is cached; a refusal is not.
	calls := k.Calls.Load()
	h.Decide(ctx, req("good"))
	h.Decide(ctx, req("bad"))
	if got := k.Calls.Load() - calls; got != 1 {
		t.Fatalf("%d calls for a cached allow and a refusal, want 1", got)
	}
	h.Done(req("good"))
	testenv.WaitFor(t, 10*time.Second, "on_done", func() bool {
		fs := k.Forms()
		return fs[len(fs)-1].Get("call") == "done"
	})
}

func TestFailClosedAndTimeout(t *testing.T) {
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer slow.Close()
	defer close(block)
	ctx := context.Background()
	r := auth.Request{Action: auth.Play, Broadcast: "b", Remote: "[::1]:5"}
	h, _ := New(Config{OnPlay: slow.URL, Timeout: 200 * time.Millisecond})
	start := time.Now()
	if _, err := h.Decide(ctx, r); wire.CodeOf(err) != wire.CodeUnavailable {
		t.Fatalf("timeout: %v, want unavailable (fail closed)", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v with a 200ms timeout", d)
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	h, _ = New(Config{OnPlay: dead.URL})
	if _, err := h.Decide(ctx, r); wire.CodeOf(err) != wire.CodeUnavailable {
		t.Fatalf("unreachable: %v", err)
	}
	h, _ = New(Config{OnPlay: dead.URL, FailOpen: true})
	if _, err := h.Decide(ctx, r); err != nil {
		t.Fatalf("unreachable with FailOpen: %v", err)
	}
	// 3xx to on_play refuses (renames are for publishing); 401 is unauthorized.
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("name") == "x" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, "other", http.StatusFound)
	}))
	defer redir.Close()
	h, _ = New(Config{OnPlay: redir.URL})
	if _, err := h.Decide(ctx, r); wire.CodeOf(err) != wire.CodeForbidden {
		t.Fatalf("3xx to play: %v", err)
	}
	r.Broadcast = "x"
	if _, err := h.Decide(ctx, r); wire.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("401: %v", err)
	}
	if _, err := New(Config{OnPublish: "ftp://x"}); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

func TestRenamed(t *testing.T) {
	for loc, want := range map[string]string{"new": "new", "/new": "new", "rtmp://host/live/new": "new", "http://h/a/b": "b"} {
		if got := renamed(loc); got != want {
			t.Errorf("renamed(%q) = %q, want %q", loc, got, want)
		}
	}
}
