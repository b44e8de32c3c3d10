package edge

import (
	"bytes"
	"io/fs"
	"net/http"
	"path"
	"time"

	clientjs "github.com/quiccast/quiccast/client-js"
	"github.com/quiccast/quiccast/shared/media"
)

// pageRoutes serves the landing page at / (landing.go), the player's
// watch page at /watch/{name} (and /?b={name}), its ES modules
// (client-js/src/*.js) at /{module}.js, /player.js first, and the
// vendored hls.js for LL-HLS.
func (n *Node) pageRoutes(mux *http.ServeMux) {
	page, err := fs.ReadFile(clientjs.Files, "index.html")
	if err != nil {
		panic("edge: player page not embedded: " + err.Error())
	}
	servePage := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(page)
	}
	mux.HandleFunc("GET /{$}", n.serveLanding(servePage))
	mux.HandleFunc("GET /broadcasts.json", n.serveListJSON)
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /watch/{name...}", func(w http.ResponseWriter, r *http.Request) {
		if media.ValidName(r.PathValue("name")) != nil {
			// The page still loads, and says "not found" and why.
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusNotFound)
			w.Write(page)
			return
		}
		servePage(w, r)
	})
	hlsjs, err := fs.ReadFile(clientjs.Files, "vendor/hls.min.mjs")
	if err != nil {
		panic("edge: hls.js not embedded: " + err.Error())
	}
	mux.HandleFunc("GET /hls.min.mjs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("ETag", `"hls.js-1.7.4"`)
		http.ServeContent(w, r, "hls.min.mjs", time.Time{}, bytes.NewReader(hlsjs))
	})
	mods, err := fs.Glob(clientjs.Files, "src/*.js")
	if err != nil || len(mods) == 0 {
		panic("edge: player modules not embedded")
	}
	for _, m := range mods {
		js, err := fs.ReadFile(clientjs.Files, m)
		if err != nil {
			panic("edge: " + m + " not embedded: " + err.Error())
		}
		// Pages of other allowed origins import the player too.
		mux.HandleFunc("GET /"+path.Base(m), func(w http.ResponseWriter, r *http.Request) {
			n.cors(w, r)
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.Write(js)
		})
	}
}
