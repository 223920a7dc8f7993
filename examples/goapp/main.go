// goapp — a Go app on the official App Engine library, run by appfront.
//
// appfront builds it itself (runtime go1xx and no entrypoint in app.yaml):
// `go build` in this directory, with the caller's GOPATH, GO111MODULE and
// GOFLAGS, then runs the binary with PORT set. appengine.Main() serves on
// that port and the library finds appfront's API server through API_HOST
// and API_PORT. See README.md.
package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/appengine"
	"google.golang.org/appengine/datastore"
	"google.golang.org/appengine/memcache"
)

// Greeting is the one entity kind of the guestbook at /guestbook.
type Greeting struct {
	Content string
	Date    time.Time
}

func main() {
	http.HandleFunc("/", root)
	http.HandleFunc("/memcache", memcacheHandler)
	http.HandleFunc("/guestbook", guestbook)
	appengine.Main()
}

// root says hello and counts the visits in memcache.
func root(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	ctx := appengine.NewContext(r)
	n, err := memcache.Increment(ctx, "visits", 1, 0)
	if err != nil {
		http.Error(w, "memcache: "+err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "Hello from Go on appfront! (app %s, visit %d)\n", appengine.AppID(ctx), n)
}

// memcacheHandler: GET ?key=K reads K; POST ?key=K&value=V writes it.
func memcacheHandler(w http.ResponseWriter, r *http.Request) {
	ctx := appengine.NewContext(r)
	key := r.FormValue("key")
	if key == "" {
		http.Error(w, "key=K is required", http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodPost {
		item := &memcache.Item{Key: key, Value: []byte(r.FormValue("value"))}
		if err := memcache.Set(ctx, item); err != nil {
			http.Error(w, "memcache: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "stored %s\n", key)
		return
	}
	item, err := memcache.Get(ctx, key)
	if err == memcache.ErrCacheMiss {
		http.Error(w, "no such key: "+key, http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, "memcache: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Write(item.Value)
}

// guestbook: POST ?content=TEXT stores a Greeting; GET lists the last ten.
func guestbook(w http.ResponseWriter, r *http.Request) {
	ctx := appengine.NewContext(r)
	parent := datastore.NewKey(ctx, "Guestbook", "default", 0, nil)
	if r.Method == http.MethodPost {
		g := Greeting{Content: r.FormValue("content"), Date: time.Now()}
		key := datastore.NewIncompleteKey(ctx, "Greeting", parent)
		if _, err := datastore.Put(ctx, key, &g); err != nil {
			http.Error(w, "datastore: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "stored\n")
		return
	}
	q := datastore.NewQuery("Greeting").Ancestor(parent).Order("-Date").Limit(10)
	var greetings []Greeting
	if _, err := q.GetAll(ctx, &greetings); err != nil {
		http.Error(w, "datastore: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	for _, g := range greetings {
		fmt.Fprintf(&b, "%s %s\n", g.Date.UTC().Format(time.RFC3339), g.Content)
	}
	fmt.Fprint(w, b.String())
}
