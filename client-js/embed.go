// Package clientjs embeds the browser player so that edges serve it from
// the one quiccast binary: its modules (/player.js, /relay.js, …), the
// watch page and the vendored hls.js (/hls.min.mjs) for LL-HLS playback.
package clientjs

import "embed"

// Files holds index.html, src/*.js and vendor/ (hls.js, with its licence).
//
//go:embed index.html src/*.js vendor/hls.min.mjs vendor/hls.js-LICENSE
var Files embed.FS
