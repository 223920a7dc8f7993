package appfronttest

// The "system" service through the official library's runtime package.
// runtime.RunInBackground needs the instance itself to receive
// GET /_ah/background, so, as in requestlog_test.go, this test binary is
// started again as the app (appengine.Main, manual scaling: background
// requests need it) behind a real appfront, and the test drives it over
// HTTP. The aetest app (automatic scaling) shows the refusal.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/log"
	"google.golang.org/appengine/memcache"
	"google.golang.org/appengine/runtime"
)

const systemAppEnv = "APPFRONT_SYSTEM_APP"

// bgResult is what a background function saw.
type bgResult struct {
	Marker    string
	RequestID string // its own request's, from the background context
	Memcache  string // a value it wrote and read back through that context
	Err       string
}

// TestSystemApp is the app when started by TestSystemRuntime.
func TestSystemApp(t *testing.T) {
	if os.Getenv(systemAppEnv) == "" {
		t.Skip("runs only as the app of TestSystemRuntime")
	}
	done := make(chan bgResult, 16)
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		// Some work first, so the CPU total is not zero.
		x := 0
		for i := 0; i < 20000000; i++ {
			x += i % 7
		}
		st, err := runtime.Stats(appengine.NewContext(r))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-Work", fmt.Sprint(x))
		json.NewEncoder(w).Encode(st)
	})
	http.HandleFunc("/bg", func(w http.ResponseWriter, r *http.Request) {
		marker := r.URL.Query().Get("marker")
		err := runtime.RunInBackground(appengine.NewContext(r), func(c context.Context) {
			res := bgResult{Marker: marker, RequestID: appengine.RequestID(c)}
			item := &memcache.Item{Key: "bg-" + marker, Value: []byte("ran " + marker)}
			if err := memcache.Set(c, item); err != nil {
				res.Err = err.Error()
			} else if got, err := memcache.Get(c, item.Key); err != nil {
				res.Err = err.Error()
			} else {
				res.Memcache = string(got.Value)
			}
			done <- res
		})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, "started")
	})
	http.HandleFunc("/bgdone", func(w http.ResponseWriter, r *http.Request) {
		select {
		case res := <-done:
			json.NewEncoder(w).Encode(res)
		case <-time.After(10 * time.Second):
			http.Error(w, "no background function ran within 10 s", 504)
		}
	})
	http.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		q := &log.Query{RequestIDs: []string{r.URL.Query().Get("id")}}
		var out []queriedLog
		res := q.Run(ctx)
		for {
			rec, err := res.Next()
			if err == log.Done {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			out = append(out, queriedLog{RequestID: string(rec.RequestID), Method: rec.Method,
				Resource: rec.Resource, Status: rec.Status, Finished: rec.Finished,
				Latency: rec.Latency, URLMapEntry: rec.URLMapEntry})
		}
		json.NewEncoder(w).Encode(out)
	})
	appengine.Main()
}

func TestSystemRuntime(t *testing.T) {
	bin := os.Getenv("APPENGINE_DEV_APPSERVER_BINARY")
	if bin == "" {
		t.Skip("APPENGINE_DEV_APPSERVER_BINARY is not set (run through tests/go/run.sh)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`application: testapp
runtime: go111
entrypoint: exec %s -test.run=^TestSystemApp$
manual_scaling:
  instances: 1
env_variables:
  %s: "1"
  GAE_DEPLOYMENT_ID: "1"
handlers:
- url: /.*
  script: auto
`, self, systemAppEnv)
	if err := os.WriteFile(filepath.Join(app, "app.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--port=0", "--admin_port=0", "--api_port=0",
		"--storage_path="+filepath.Join(dir, "storage"), app)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := moduleLine.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	var base string
	select {
	case base = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatal("appfront did not print its module line")
	}
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return string(body)
	}

	t.Run("Stats", func(t *testing.T) {
		var st runtime.Statistics
		if err := json.Unmarshal([]byte(get("/stats")), &st); err != nil {
			t.Fatal(err)
		}
		// The instance is this Go test binary: some megabytes resident,
		// some CPU used (it just counted to 20 million).
		if st.RAM.Current < 1 || st.RAM.Current > 16384 {
			t.Errorf("RAM.Current %.1f MB: want a Go process's few megabytes", st.RAM.Current)
		}
		if st.RAM.Average1M <= 0 || st.RAM.Average10M <= 0 {
			t.Errorf("RAM averages %+v: want positive", st.RAM)
		}
		if st.CPU.Total <= 0 || st.CPU.Rate1M < 0 || st.CPU.Rate10M < 0 {
			t.Errorf("CPU %+v: want a positive total and non-negative rates", st.CPU)
		}
		var again runtime.Statistics
		if err := json.Unmarshal([]byte(get("/stats")), &again); err != nil {
			t.Fatal(err)
		}
		t.Logf("first %+v; second %+v", st, again)
		if again.CPU.Total < st.CPU.Total {
			t.Errorf("CPU total went down: %.1f then %.1f", st.CPU.Total, again.CPU.Total)
		}
		if again.CPU.Rate1M <= 0 {
			t.Errorf("CPU rate over a minute %.1f after two busy requests: want positive",
				again.CPU.Rate1M)
		}
	})

	t.Run("RunInBackground", func(t *testing.T) {
		marker := fmt.Sprintf("m%d", time.Now().UnixNano())
		if got := get("/bg?marker=" + marker); got != "started" {
			t.Fatalf("/bg answered %q", got)
		}
		var res bgResult
		if err := json.Unmarshal([]byte(get("/bgdone")), &res); err != nil {
			t.Fatal(err)
		}
		if res.Marker != marker || res.Err != "" || res.Memcache != "ran "+marker {
			t.Fatalf("background function saw %+v: want marker %s and its memcache value", res,
				marker)
		}
		if res.RequestID == "" {
			t.Fatal("the background context has no request id")
		}
		// The background request is in the request log once it ended.
		var logs []queriedLog
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if err := json.Unmarshal([]byte(get("/query?id="+res.RequestID)), &logs); err != nil {
				t.Fatal(err)
			}
			if len(logs) == 1 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(logs) != 1 {
			t.Fatalf("log.Query for the background request %s: %+v", res.RequestID, logs)
		}
		l := logs[0]
		if l.Method != "GET" || l.Resource != "/_ah/background" || l.Status != 200 || !l.Finished {
			t.Errorf("request log record %+v: want GET /_ah/background, 200, finished", l)
		}
	})
}

// TestSystemAutomatic: aetest's app has automatic scaling, so background
// requests are refused with BACKEND_REQUIRED; Stats answers.
func TestSystemAutomatic(t *testing.T) {
	runCases(t, []testCase{
		{"RunInBackground refused", func(t *testing.T, ctx context.Context) {
			err := runtime.RunInBackground(ctx, func(context.Context) {
				t.Error("the function ran in an app with automatic scaling")
			})
			if err == nil || !strings.Contains(err.Error(), "BACKEND_REQUIRED") {
				t.Fatalf("RunInBackground: %v, want a BACKEND_REQUIRED error", err)
			}
		}},
		{"Stats", func(t *testing.T, ctx context.Context) {
			st, err := runtime.Stats(ctx)
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if st.CPU.Total < 0 || st.RAM.Current < 0 || st.CPU.Rate1M < 0 {
				t.Fatalf("Stats %+v: negative figures", st)
			}
		}},
	})
}
