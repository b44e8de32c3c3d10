// Package serve runs a node's listeners until its context ends: the one
// way origin and edge start, stop and report a failed server.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Until runs serve until ctx is done, then returns stop's error; if serve
// ends first, it returns its error (nil for http.ErrServerClosed).
func Until(ctx context.Context, name string, serve func() error, stop func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case <-ctx.Done():
		return stop()
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("%s: serve: %w", name, err)
	}
}

// Shutdown stops srv, giving requests in flight up to d to finish, then
// closes what is left.
func Shutdown(srv *http.Server, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	return err
}
