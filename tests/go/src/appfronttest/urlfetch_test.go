package appfronttest

// "urlfetch" through the official Go library (google.golang.org/appengine/
// urlfetch): an http.Client whose transport is the Fetch call, against an
// httptest server on loopback.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/ioutil"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/urlfetch"
)

func newOrigin(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := ioutil.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Got-Custom", r.Header.Get("X-Custom"))
		w.Header().Add("X-Multi", "one")
		w.Header().Add("X-Multi", "two")
		fmt.Fprintf(w, "%s %s body=%q", r.Method, r.URL.RequestURI(), body)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/echo?from=moved", http.StatusFound)
	})
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, r *http.Request) {
		// Compressed whatever was asked, saying what was asked.
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(strings.Repeat("plain text from a gzip origin\n", 100)))
		zw.Close()
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("X-Got-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("short and stout"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
			w.Write([]byte("slow done"))
		case <-r.Context().Done(): // the fetch gave up and closed
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestURLFetch(t *testing.T) {
	origin := newOrigin(t)
	runCases(t, []testCase{
		{"GET round trip", func(t *testing.T, ctx context.Context) {
			req, _ := http.NewRequest("GET", origin.URL+"/echo?x=1", nil)
			req.Header.Set("X-Custom", "hello")
			res, err := urlfetch.Client(ctx).Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, err := ioutil.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			if res.StatusCode != 200 || string(body) != `GET /echo?x=1 body=""` {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			if res.Header.Get("X-Got-Custom") != "hello" {
				t.Errorf("the request header did not arrive: %v", res.Header)
			}
			if got := res.Header["X-Multi"]; len(got) != 2 || got[0] != "one" || got[1] != "two" {
				t.Errorf("X-Multi = %q, want [one two]", got)
			}
		}},
		{"POST body", func(t *testing.T, ctx context.Context) {
			res, err := urlfetch.Client(ctx).Post(origin.URL+"/echo", "text/plain",
				strings.NewReader("payload bytes"))
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			body, _ := ioutil.ReadAll(res.Body)
			if string(body) != `POST /echo body="payload bytes"` {
				t.Fatalf("got %q", body)
			}
		}},
		{"gzip content arrives as plain text", func(t *testing.T, ctx context.Context) {
			// urlfetch.Client sends no Accept-Encoding of its own: the
			// service asks for gzip and decodes, as dev_appserver does.
			res, err := urlfetch.Client(ctx).Get(origin.URL + "/gzip")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, err := ioutil.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			want := strings.Repeat("plain text from a gzip origin\n", 100)
			if string(body) != want {
				t.Fatalf("got %d bytes %.60q..., want the %d plain bytes", len(body), body, len(want))
			}
			if ce := res.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding %q is still there", ce)
			}
			if got := res.Header.Get("X-Got-Accept-Encoding"); got != "gzip" {
				t.Errorf("the origin got Accept-Encoding %q, want gzip", got)
			}
			if res.ContentLength != int64(len(want)) {
				t.Errorf("ContentLength %d, want %d", res.ContentLength, len(want))
			}
		}},
		{"status codes pass through", func(t *testing.T, ctx context.Context) {
			res, err := urlfetch.Client(ctx).Get(origin.URL + "/teapot")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, _ := ioutil.ReadAll(res.Body)
			if res.StatusCode != http.StatusTeapot || string(body) != "short and stout" {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
		}},
		{"redirect followed by http.Client", func(t *testing.T, ctx context.Context) {
			// The library asks Fetch not to follow; http.Client does.
			res, err := urlfetch.Client(ctx).Get(origin.URL + "/moved")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, _ := ioutil.ReadAll(res.Body)
			if string(body) != `GET /echo?from=moved body=""` {
				t.Fatalf("got %q", body)
			}
		}},
		{"deadline exceeded", func(t *testing.T, ctx context.Context) {
			tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := urlfetch.Client(tctx).Get(origin.URL + "/slow?d=5s")
			if err == nil {
				t.Fatalf("a 5 s answer arrived within a 300 ms deadline")
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the deadline took %v to act", took)
			}
			// Either the Fetch's own DEADLINE_EXCEEDED (the service's
			// deadline is the context's) or the library giving up on
			// the call at the same instant: both are timeouts.
			inner := err
			if ue, ok := err.(*url.Error); ok {
				inner = ue.Err
			}
			if !appengine.IsTimeoutError(inner) {
				t.Errorf("not a timeout: %v", err)
			}
		}},
		{"connection refused", func(t *testing.T, ctx context.Context) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			_, err = urlfetch.Client(ctx).Get("http://" + addr + "/")
			if err == nil || !strings.Contains(err.Error(), "CONNECTION_ERROR") {
				t.Fatalf("got %v, want CONNECTION_ERROR", err)
			}
		}},
		{"invalid URL", func(t *testing.T, ctx context.Context) {
			_, err := urlfetch.Client(ctx).Get("http://user:pw@127.0.0.1/")
			if err == nil || !strings.Contains(err.Error(), "INVALID_URL") {
				t.Fatalf("got %v, want INVALID_URL", err)
			}
		}},
		{"concurrent fetches", func(t *testing.T, ctx context.Context) {
			const n = 5
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := time.Now()
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					res, err := urlfetch.Client(ctx).Get(origin.URL + "/slow?d=800ms")
					if err == nil {
						b, _ := ioutil.ReadAll(res.Body)
						if string(b) != "slow done" {
							err = fmt.Errorf("body %q", b)
						}
					}
					errs[i] = err
				}(i)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("fetch %d: %v", i, err)
				}
			}
			// One after the other would take 4 s.
			if took := time.Since(start); took > 2800*time.Millisecond {
				t.Errorf("%d fetches of 800 ms took %v: they did not run at once", n, took)
			}
		}},
	})
}
