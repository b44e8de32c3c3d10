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
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/config"
)

// Config configures a publisher.
type Config struct {
	// URL is the origin's ingest URL, ws(s)://host:port/publish/{broadcast}.
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
	s.String(&c.URL, "url", "ws://127.0.0.1:7000/publish/test", "origin ingest URL: ws(s)://host:port/publish/{broadcast}")
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

// Run publishes until ctx is done. It returns ctx's error, or an error if
// ffmpeg cannot start at all.
func Run(ctx context.Context, cfg Config) error {
	cfg.withDefaults()
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
	err := sendLoop(ctx, &cfg, segs)
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
// keyframe, and reconnects when the connection fails.
func sendLoop(ctx context.Context, cfg *Config, segs <-chan any) error {
	backoff := newBackoff(cfg.MinBackoff, cfg.MaxBackoff)
	var init *cmaf.Init
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
		init, err = session(ctx, cfg, init, segs)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStreamEnd) {
			return err
		}
		if time.Since(started) > 10*time.Second {
			backoff.reset()
		}
		wait := backoff.next()
		cfg.Logger.Warn("publish connection ended; reconnecting", "url", auth.Redact(cfg.URL), "err", err, "in", wait)
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

// session runs one connection. It returns the init segment to use next.
func session(ctx context.Context, cfg *Config, init *cmaf.Init, segs <-chan any) (*cmaf.Init, error) {
	h := http.Header{}
	if cfg.Token != "" {
		h.Set("Authorization", "Bearer "+cfg.Token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, WriteBufferSize: 64 << 10, NetDialContext: cfg.Dial}
	conn, resp, err := d.DialContext(ctx, cfg.URL, h)
	if err != nil {
		if resp != nil {
			return init, fmt.Errorf("dial %s: %w (HTTP %s)", auth.Redact(cfg.URL), redactErr(err), resp.Status)
		}
		return init, fmt.Errorf("dial %s: %w", auth.Redact(cfg.URL), redactErr(err))
	}
	defer conn.Close()
	// The origin only speaks to close or refuse; read to learn why.
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	write := func(b []byte) error {
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		return conn.WriteMessage(websocket.BinaryMessage, b)
	}
	if err := write(init.Data); err != nil {
		return init, err
	}
	if cfg.OnInit != nil {
		cfg.OnInit(init)
	}
	cfg.Logger.Info("publishing", "url", auth.Redact(cfg.URL), "codec", init.Codec())
	waitKey := true
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return init, ctx.Err()
		case err := <-closed:
			return init, closeReason(err)
		case s, ok := <-segs:
			if !ok {
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				conn.SetReadDeadline(time.Now().Add(writeWait))
				<-closed // the origin answers once it has taken everything
				return init, errStreamEnd
			}
			switch s := s.(type) {
			case *cmaf.Init:
				if !bytes.Equal(s.Data, init.Data) {
					// ffmpeg restarted with other parameters: the
					// origin takes a new init only on a new
					// connection.
					return s, errors.New("init segment changed")
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
					select {
					case cerr := <-closed:
						return init, closeReason(cerr)
					case <-time.After(100 * time.Millisecond):
					}
					return init, err
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
		return fmt.Errorf("origin closed the connection: %d %s", ce.Code, ce.Text)
	}
	return err
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
