// Package clientjs embeds the browser player so that edges serve it from
// the one quiccast binary: its modules (/player.js, /relay.js, …) and the
// watch page.
package clientjs

import "embed"

// Files holds index.html and src/*.js.
//
//go:embed index.html src/*.js
var Files embed.FS
