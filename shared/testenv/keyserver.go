package testenv

import (
	"database/sql"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// KeyServer is an nginx-rtmp style on_publish/on_play/on_done service
// written the way people write them: a handler that looks the stream key
// (the "key" form field) and name up in PostgreSQL. 200 allows, 302 to
// another name renames, 403 refuses. It records every form it got.
type KeyServer struct {
	URL   string
	DB    *sql.DB
	Calls atomic.Int32
	mu    sync.Mutex
	forms []url.Values
}

// StartKeyServer starts PostgreSQL (StartPostgres) with a stream_keys
// table holding, for the name "cam", an accepted key "good", a refused key
// "bad" and a key "alias" that renames to "renamed"; and serves the hook
// on loopback until the test ends. Add rows through DB.
func StartKeyServer(t testing.TB) *KeyServer {
	t.Helper()
	pg := StartPostgres(t)
	db, err := sql.Open("pgx", pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE stream_keys (stream_key text, name text, allowed boolean NOT NULL, rename_to text, PRIMARY KEY (stream_key, name));
		INSERT INTO stream_keys VALUES ('good', 'cam', true, NULL), ('bad', 'cam', false, NULL), ('alias', 'cam', true, 'renamed')`); err != nil {
		t.Fatal(err)
	}
	k := &KeyServer{DB: db}
	srv := httptest.NewServer(k)
	t.Cleanup(srv.Close)
	k.URL = srv.URL
	return k
}

func (k *KeyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.Calls.Add(1)
	if err := r.ParseForm(); err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.forms = append(k.forms, r.PostForm)
	k.mu.Unlock()
	if r.PostForm.Get("call") == "done" {
		return
	}
	var allowed bool
	var renameTo sql.NullString
	err := k.DB.QueryRowContext(r.Context(), `SELECT allowed, rename_to FROM stream_keys WHERE stream_key = $1 AND name = $2`,
		r.PostForm.Get("key"), r.PostForm.Get("name")).Scan(&allowed, &renameTo)
	switch {
	case err == sql.ErrNoRows || err == nil && !allowed:
		http.Error(w, "no", http.StatusForbidden)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case renameTo.Valid:
		w.Header().Set("Location", renameTo.String)
		w.WriteHeader(http.StatusFound)
	}
}

// Forms returns the forms received so far.
func (k *KeyServer) Forms() []url.Values {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]url.Values(nil), k.forms...)
}
