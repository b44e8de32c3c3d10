// Package publish streams a live broadcast to an origin's WebSocket ingest:
// it runs ffmpeg (a file in a loop, or a test pattern) to fragmented MP4 on
// stdout, and sends each chunk as it comes, reconnecting with backoff when
// the origin goes away. ffmpeg keeps running across reconnects; after one,
// the init segment is sent again and the stream resumes at the next
// keyframe.
package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/wire"
)

// Config configures a publisher.
type Config struct {
	// URL is the origin's ingest URL, ws(s)://host:port/publish/{broadcast},
	// or several, comma-separated: the publisher moves to the next one
	// when the current one fails, and waits out a backoff only once every
	// one has failed in a row. A host name that resolves to several
	// addresses is tried address by address on each dial.
	URL   string
	Token string
	// Input is a media file to loop; empty means the testsrc2 + sine
	// test pattern.
	Input string
	// Stream, when set, is a fragmented-MP4 byte stream to send instead
	// of running ffmpeg (-stdin: another encoder's stdout). Run returns
	// nil once it is sent to its end.
	Stream io.Reader
	// Copy sends Input's streams without re-encoding (they must be
	// H.264/HEVC/AV1 + AAC/Opus with regular keyframes).
	Copy bool
	// FromStdin makes Run read Stream from os.Stdin (the -stdin flag).
	FromStdin bool
	Size      string        // test pattern size, WxH
	FPS       int           // test pattern frame rate
	Bitrate   string        // video bitrate, ffmpeg syntax
	GOP       time.Duration // keyframe interval = group length
	// Frag is the fragment (object) duration.
	Frag   time.Duration
	FFmpeg string
	// Dial, when set, opens the TCP connection to the origin.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MinBackoff and MaxBackoff bound the wait between reconnects.
	MinBackoff, MaxBackoff time.Duration

	Logger *slog.Logger
	// OnInit and OnChunk, when set, see what is sent, after it was
	// written (tests and the load generator use them).
	OnInit  func(*cmaf.Init)
	OnChunk func(*cmaf.Chunk)
}

// Flags declares every setting on s.
func (c *Config) Flags(s *config.Set) {
	s.StringList(&c.URL, "url", "ws://127.0.0.1:7000/publish/test", "origin ingest `URL`: ws(s)://host:port/publish/{broadcast}; repeat the flag or separate with commas to give several origins, tried in turn when one fails")
	s.String(&c.Token, "token", "", "publish token, sent as Authorization: Bearer")
	s.String(&c.Input, "input", "", "media file to loop; empty publishes a test pattern (testsrc2 + sine)")
	s.Bool(&c.FromStdin, "stdin", false, "read fragmented MP4 from stdin instead of running ffmpeg (pipe any encoder in)")
	s.Bool(&c.Copy, "copy", false, "send -input's streams without re-encoding")
	s.String(&c.Size, "size", "1280x720", "test pattern size")
	s.Int(&c.FPS, "fps", 30, "test pattern frame rate")
	s.String(&c.Bitrate, "bitrate", "2M", "video bitrate")
	s.Duration(&c.GOP, "gop", time.Second, "keyframe interval, which is the group length")
	s.Duration(&c.Frag, "frag", 33*time.Millisecond, "fragment (object) duration; one frame at 30 fps")
	s.String(&c.FFmpeg, "ffmpeg", "ffmpeg", "ffmpeg executable")
	s.Duration(&c.MinBackoff, "min-backoff", 500*time.Millisecond, "first wait before reconnecting")
	s.Duration(&c.MaxBackoff, "max-backoff", 10*time.Second, "longest wait before reconnecting")
}

func (c *Config) withDefaults() {
	d := Config{}
	d.Flags(config.New("publish", ""))
	if c.Size == "" {
		c.Size = d.Size
	}
	if c.FPS <= 0 {
		c.FPS = d.FPS
	}
	if c.Bitrate == "" {
		c.Bitrate = d.Bitrate
	}
	if c.GOP <= 0 {
		c.GOP = d.GOP
	}
	if c.Frag <= 0 {
		c.Frag = d.Frag
	}
	if c.FFmpeg == "" {
		c.FFmpeg = d.FFmpeg
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// FFmpegArgs returns the ffmpeg arguments that write CMAF to stdout.
func (c *Config) FFmpegArgs() []string {
	a := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re"}
	if c.Input == "" {
		a = append(a,
			"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=%d", c.Size, c.FPS),
			"-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000")
	} else {
		a = append(a, "-stream_loop", "-1", "-i", c.Input)
	}
	if c.Copy {
		a = append(a, "-c", "copy")
	} else {
		gop := fmt.Sprint(max(1, int(c.GOP.Seconds()*float64(c.FPS)+0.5)))
		a = append(a,
			"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
			"-b:v", c.Bitrate, "-maxrate", c.Bitrate, "-bufsize", c.Bitrate,
			"-force_key_frames", fmt.Sprintf("expr:gte(t,n_forced*%g)", c.GOP.Seconds()),
			"-g", gop, "-sc_threshold", "0",
			"-c:a", "aac", "-b:a", "128k", "-ar", "48000")
	}
	return append(a,
		"-f", "mp4", "-movflags", "cmaf+frag_keyframe+empty_moov+default_base_moof",
		"-frag_duration", fmt.Sprint(c.Frag.Microseconds()), "-write_prft", "wallclock", "-")
}

// Refusal is a permanent failure: retrying cannot help, and its message
// says what to change. Run returns it instead of reconnecting.
type Refusal struct{ Msg string }

func (r *Refusal) Error() string { return r.Msg }

// urls checks and returns the comma-separated ingest URLs.
func urls(list string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, &Refusal{fmt.Sprintf("-url %s: %v", auth.Redact(raw), redactErr(err))}
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return nil, &Refusal{fmt.Sprintf("-url %s: the ingest URL starts with ws:// or wss:// (ws://ORIGIN:7000/publish/NAME), not %s://", auth.Redact(raw), u.Scheme)}
		}
		if u.Host == "" {
			return nil, &Refusal{fmt.Sprintf("-url %s: no host (want ws://ORIGIN:7000/publish/NAME)", auth.Redact(raw))}
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, &Refusal{"-url: no ingest URL given (want ws://ORIGIN:7000/publish/NAME)"}
	}
	return out, nil
}

// Run publishes until ctx is done. It returns ctx's error, a *Refusal when
// an origin refuses for a reason retrying cannot fix (bad URL or name,
// token not accepted, name taken, no ingest at that address), or an error
// if ffmpeg cannot start at all.
func Run(ctx context.Context, cfg Config) error {
	cfg.withDefaults()
	list, err := urls(cfg.URL)
	if err != nil {
		return err
	}
	if cfg.FromStdin && cfg.Stream == nil {
		cfg.Stream = os.Stdin
	}
	if cfg.Stream == nil {
		if _, err := exec.LookPath(cfg.FFmpeg); err != nil {
			return fmt.Errorf("publish: %w (install ffmpeg)", err)
		}
	}
	segs := make(chan any, 64)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	var serr error
	go func() {
		defer wg.Done()
		if cfg.Stream != nil {
			serr = readStream(ctx, cfg.Stream, segs)
			return
		}
		runFFmpeg(ctx, &cfg, segs)
	}()
	err = sendLoop(ctx, &cfg, list, segs)
	cancel()
	wg.Wait()
	if errors.Is(err, errStreamEnd) {
		return serr
	}
	return err
}

// redactErr is err without the token, when its text quotes the URL.
func redactErr(err error) error {
	if s := auth.Redact(err.Error()); s != err.Error() {
		return errors.New(s)
	}
	return err
}

// errStreamEnd says the input stream was sent to its end.
var errStreamEnd = errors.New("publish: input ended")

// readStream hands the segments of r to segs and closes segs at the end.
func readStream(ctx context.Context, r io.Reader, segs chan<- any) error {
	defer close(segs)
	cr := cmaf.NewReader(r, cmaf.Limits{})
	for {
		seg, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("publish: input: %w", err)
		}
		select {
		case segs <- seg:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runFFmpeg keeps ffmpeg running and hands its init and chunks to segs.
func runFFmpeg(ctx context.Context, cfg *Config, segs chan<- any) {
	backoff := newBackoff(cfg.MinBackoff, cfg.MaxBackoff)
	for ctx.Err() == nil {
		started := time.Now()
		err := ffmpegOnce(ctx, cfg, segs)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			backoff.reset()
		}
		wait := backoff.next()
		cfg.Logger.Warn("ffmpeg stopped; restarting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func ffmpegOnce(ctx context.Context, cfg *Config, segs chan<- any) error {
	cmd := exec.CommandContext(ctx, cfg.FFmpeg, cfg.FFmpegArgs()...)
	stderr := &tailBuffer{max: 2048}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	r := cmaf.NewReader(out, cmaf.Limits{})
	var rerr error
	for {
		seg, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				rerr = fmt.Errorf("ffmpeg output: %w", err)
			}
			break
		}
		select {
		case segs <- seg:
		case <-ctx.Done():
		}
	}
	io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if rerr == nil && werr != nil {
		rerr = fmt.Errorf("ffmpeg: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	if rerr == nil {
		rerr = errors.New("ffmpeg exited")
	}
	return rerr
}

// sendLoop connects, sends the latest init and then chunks from the next
// keyframe, and reconnects when the connection fails: to the next URL at
// once, and with a backoff once every URL has failed in a row.
func sendLoop(ctx context.Context, cfg *Config, list []string, segs <-chan any) error {
	backoff := newBackoff(cfg.MinBackoff, cfg.MaxBackoff)
	var init *cmaf.Init
	cur := 0           // index in list of the URL to dial
	failed := 0        // failures in a row since the last accepted session
	published := false // an origin accepted this publisher once
	for ctx.Err() == nil {
		// Wait for an init segment before connecting.
		for init == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case s, ok := <-segs:
				if !ok {
					return errStreamEnd
				}
				if in, ok := s.(*cmaf.Init); ok {
					init = in
				}
			}
		}
		started := time.Now()
		var err error
		var ready bool
		u := list[cur]
		init, ready, err = session(ctx, cfg, u, init, segs)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStreamEnd) {
			return err
		}
		if r := refusal(u, err, published); r != nil {
			return r
		}
		published = published || ready
		if ready {
			failed = 0
		}
		if time.Since(started) > 10*time.Second {
			backoff.reset()
		}
		failed++
		cur = (cur + 1) % len(list)
		var wait time.Duration
		if failed >= len(list) {
			// Every URL failed in a row: back off before the next round.
			wait = backoff.next()
			failed = 0
		}
		cfg.Logger.Warn("publish connection ended; reconnecting", "url", auth.Redact(u), "err", err, "next", auth.Redact(list[cur]), "in", wait)
		// Keep draining ffmpeg while waiting, remembering its init.
		t := time.NewTimer(wait)
	drain:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
				break drain
			case s, ok := <-segs:
				if !ok {
					return errStreamEnd
				}
				if in, ok := s.(*cmaf.Init); ok {
					init = in
				}
			}
		}
	}
	return ctx.Err()
}

const writeWait = 5 * time.Second

// session runs one connection to u. It returns the init segment to use
// next, and whether the origin accepted the broadcast (said ready).
func session(ctx context.Context, cfg *Config, u string, init *cmaf.Init, segs <-chan any) (_ *cmaf.Init, ready bool, _ error) {
	h := http.Header{}
	if cfg.Token != "" {
		h.Set("Authorization", "Bearer "+cfg.Token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, WriteBufferSize: 64 << 10, NetDialContext: cfg.Dial}
	conn, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			return init, false, &httpError{status: resp.StatusCode, err: fmt.Errorf("dial %s: %w (HTTP %s)", auth.Redact(u), redactErr(err), resp.Status)}
		}
		return init, false, fmt.Errorf("dial %s: %w", auth.Redact(u), redactErr(err))
	}
	defer conn.Close()
	// The origin only speaks to close or refuse; read to learn why.
	closed := make(chan error, 1)
	var readySeen atomic.Bool
	go func() {
		for {
			typ, _, err := conn.ReadMessage()
			if err != nil {
				closed <- err
				return
			}
			if typ == websocket.TextMessage { // "ready", the only one
				readySeen.Store(true)
			}
		}
	}()
	defer func() { ready = readySeen.Load() }()
	write := func(b []byte) error {
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		return conn.WriteMessage(websocket.BinaryMessage, b)
	}
	// A failed write may be the origin's refusal arriving: its close
	// frame says why, and that decides whether to retry.
	writeFailed := func(err error) error {
		select {
		case cerr := <-closed:
			return closeReason(cerr)
		case <-time.After(100 * time.Millisecond):
		}
		return err
	}
	if err := write(init.Data); err != nil {
		return init, false, writeFailed(err)
	}
	if cfg.OnInit != nil {
		cfg.OnInit(init)
	}
	cfg.Logger.Info("publishing", "url", auth.Redact(u), "codec", init.Codec())
	waitKey := true
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return init, false, ctx.Err()
		case err := <-closed:
			return init, false, closeReason(err)
		case s, ok := <-segs:
			if !ok {
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				conn.SetReadDeadline(time.Now().Add(writeWait))
				<-closed // the origin answers once it has taken everything
				return init, false, errStreamEnd
			}
			switch s := s.(type) {
			case *cmaf.Init:
				if !bytes.Equal(s.Data, init.Data) {
					// ffmpeg restarted with other parameters: the
					// origin takes a new init only on a new
					// connection.
					return s, false, errors.New("init segment changed")
				}
			case *cmaf.Chunk:
				if waitKey && !s.Keyframe {
					continue
				}
				waitKey = false
				buf = buf[:0]
				if s.Capture != 0 {
					buf = cmaf.AppendPrft(buf, init.PrimaryTrak().ID, s.Capture, s.DecodeTime)
				}
				buf = append(buf, s.Data...)
				if err := write(buf); err != nil {
					return init, false, writeFailed(err)
				}
				if cfg.OnChunk != nil {
					cfg.OnChunk(s)
				}
			}
		}
	}
}

// closeReason describes how the origin closed the connection.
func closeReason(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Errorf("origin closed the connection: %w", ce)
	}
	return err
}

// httpError is a handshake the server answered with an HTTP status.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

// refusal returns a *Refusal when err from a session with u will not go
// away by retrying. A name taken (4009) is permanent only before this
// publisher was ever accepted: after that, the name may still be held by
// its own previous connection, which the origin has not yet seen die.
func refusal(u string, err error, published bool) error {
	ru := auth.Redact(u)
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case he.status == http.StatusNotFound:
			return &Refusal{fmt.Sprintf("%s answered HTTP 404: no ingest there; publish to the origin's address and path, ws://ORIGIN:7000/publish/NAME (an edge's port answers 404)", ru)}
		case he.status == http.StatusUnauthorized || he.status == http.StatusForbidden:
			return &Refusal{fmt.Sprintf("%s answered HTTP %d: check -token", ru, he.status)}
		case he.status >= 400 && he.status < 500 && he.status != http.StatusRequestTimeout && he.status != http.StatusTooManyRequests:
			return &Refusal{fmt.Sprintf("%s answered HTTP %d: is this an origin's ingest URL (ws://ORIGIN:7000/publish/NAME)?", ru, he.status)}
		}
		return nil
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return nil
	}
	switch wire.Code(ce.Code) {
	case wire.CodeBadRequest:
		return &Refusal{fmt.Sprintf("origin %s refused the broadcast (%d): %s; change the name in the URL", ru, ce.Code, ce.Text)}
	case wire.CodeUnauthorized:
		return &Refusal{fmt.Sprintf("origin %s did not accept the token (%d): %s; set -token to one of the origin's -publish-tokens", ru, ce.Code, ce.Text)}
	case wire.CodeForbidden:
		return &Refusal{fmt.Sprintf("origin %s: the token may not publish this broadcast (%d): %s; use a token for this name", ru, ce.Code, ce.Text)}
	case wire.CodeRemoved:
		return &Refusal{fmt.Sprintf("origin %s: an operator dropped this publisher (%d): %s", ru, ce.Code, ce.Text)}
	case wire.CodeBarred:
		return &Refusal{fmt.Sprintf("origin %s: an operator barred the name for a while (%d): %s; try later", ru, ce.Code, ce.Text)}
	case wire.CodeConflict:
		if !published {
			return &Refusal{fmt.Sprintf("origin %s: the name is taken (%d): %s; publish under another name, or stop the other publisher", ru, ce.Code, ce.Text)}
		}
	}
	return nil
}

type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur = b.min }

// next returns the wait (with ±20 % jitter) and doubles the next one.
func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
