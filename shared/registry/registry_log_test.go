package registry

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/testenv"
)

// Issue 13, item 5: with Redis down, go-redis printed raw "pool.go:770: …"
// lines on stderr among the structured logs. They now go through the
// registry's logger.
func TestRedisClientLinesGoThroughTheLogger(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: Redis is down
	logs := &testenv.Logs{}
	ctx := context.Background()
	r, err := Open(ctx, Options{URL: "redis://" + addr + "/0", NodeID: "n1", Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testenv.WaitFor(t, 20*time.Second, "a go-redis line in the structured log", func() bool {
		r.Lookup(ctx, "x")
		return len(logs.Lines("redis client: ")) > 0
	})
	t.Log(logs.Lines("redis client: ")[0])
}
