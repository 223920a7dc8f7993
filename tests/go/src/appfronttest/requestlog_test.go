package appfronttest

// Request logs through the official library: a real HTTP request goes
// through appfront's front end to an app built on google.golang.org/
// appengine (this test binary, started again as the app), which logs a
// line; the app then reads that request back with log.Query, as an app
// reading its own logs does, and the test checks the record.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/appengine"
	"google.golang.org/appengine/log"
)

const reqlogAppEnv = "APPFRONT_REQLOG_APP"

// queriedLog is what the app reports of one log.Record.
type queriedLog struct {
	RequestID, Method, Resource, HTTPVersion, IP, Host, UserAgent, Combined, URLMapEntry string
	Status                                                                               int32
	ResponseSize                                                                         int64
	Finished                                                                             bool
	Latency                                                                              time.Duration
	Lines                                                                                []string
	Levels                                                                               []int
}

// TestRequestLogApp is the app when started by TestRequestLogQuery (the
// environment says so); otherwise it does nothing.
func TestRequestLogApp(t *testing.T) {
	if os.Getenv(reqlogAppEnv) == "" {
		t.Skip("runs only as the app of TestRequestLogQuery")
	}
	http.HandleFunc("/logme", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		log.Warningf(ctx, "%s", r.URL.Query().Get("marker"))
		fmt.Fprint(w, appengine.RequestID(ctx))
	})
	http.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		ctx := appengine.NewContext(r)
		q := &log.Query{AppLogs: true, RequestIDs: []string{r.URL.Query().Get("id")}}
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
			l := queriedLog{RequestID: string(rec.RequestID), Method: rec.Method, Resource: rec.Resource,
				HTTPVersion: rec.HTTPVersion, IP: rec.IP, Host: rec.Host,
				UserAgent: rec.UserAgent, Combined: rec.Combined, Status: rec.Status,
				ResponseSize: rec.ResponseSize, Finished: rec.Finished, Latency: rec.Latency,
				URLMapEntry: rec.URLMapEntry}
			for _, a := range rec.AppLogs {
				l.Lines = append(l.Lines, a.Message)
				l.Levels = append(l.Levels, a.Level)
			}
			out = append(out, l)
		}
		json.NewEncoder(w).Encode(out)
	})
	appengine.Main()
}

var moduleLine = regexp.MustCompile(`^Starting module "default" running at: (\S+)`)

// reqlogApp writes the app directory of TestRequestLogApp under dir.
func reqlogApp(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "app")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`application: testapp
runtime: go111
entrypoint: exec %s -test.run=^TestRequestLogApp$
env_variables:
  %s: "1"
  GAE_DEPLOYMENT_ID: "1"
handlers:
- url: /.*
  script: auto
`, self, reqlogAppEnv)
	if err := os.WriteFile(filepath.Join(app, "app.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return app
}

// startReqlogAppfront runs appfront on app with the extra flags; it
// returns its default module's URL, a GET on it and a stop (SIGINT, then
// wait: a clean shutdown).
func startReqlogAppfront(t *testing.T, bin, dir, app string, flags ...string) (string, func(string) string, func()) {
	t.Helper()
	args := append([]string{"--port=0", "--admin_port=0", "--api_port=0",
		"--storage_path=" + filepath.Join(dir, "storage")}, flags...)
	cmd := exec.Command(bin, append(args, app)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	}
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
		stop()
		t.Fatal("appfront did not print its module line")
	}

	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("User-Agent", "appfront-go-test")
		resp, err := http.DefaultClient.Do(req)
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
	return base, get, stop
}

func TestRequestLogQuery(t *testing.T) {
	bin := os.Getenv("APPENGINE_DEV_APPSERVER_BINARY")
	if bin == "" {
		t.Skip("APPENGINE_DEV_APPSERVER_BINARY is not set (run through tests/go/run.sh)")
	}
	dir := t.TempDir()
	base, get, stop := startReqlogAppfront(t, bin, dir, reqlogApp(t, dir))
	defer stop()
	marker := fmt.Sprintf("request log test %d", time.Now().UnixNano())
	id := get("/logme?marker=" + strings.ReplaceAll(marker, " ", "+"))
	if id == "" {
		t.Fatal("the app saw no request id")
	}

	var logs []queriedLog
	if err := json.Unmarshal([]byte(get("/query?id="+id)), &logs); err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 {
		t.Fatalf("log.Query for %s: %d records, want 1: %+v", id, len(logs), logs)
	}
	l := logs[0]
	if l.RequestID != id || l.Method != "GET" || l.Status != 200 || !l.Finished {
		t.Errorf("record %+v: want request %s, GET, 200, finished", l, id)
	}
	if want := "/logme?marker=" + strings.ReplaceAll(marker, " ", "+"); l.Resource != want {
		t.Errorf("resource %q, want %q", l.Resource, want)
	}
	if l.HTTPVersion != "HTTP/1.1" || l.IP != "127.0.0.1" || l.UserAgent != "appfront-go-test" ||
		l.ResponseSize != int64(len(id)) || !strings.HasPrefix(base, "http://"+l.Host) {
		t.Errorf("record %+v", l)
	}
	if l.URLMapEntry != "/.*" {
		t.Errorf("url_map_entry %q, want the handler's url /.*", l.URLMapEntry)
	}
	if !strings.Contains(l.Combined, `"GET /logme?marker=`) || l.Latency <= 0 {
		t.Errorf("combined %q, latency %v", l.Combined, l.Latency)
	}
	if len(l.Lines) != 1 || l.Lines[0] != marker || l.Levels[0] != 2 {
		t.Errorf("app logs %q levels %v, want [%q] at level 2 (warning)", l.Lines, l.Levels,
			marker)
	}
}

// With --logs_path, log.Query in the app finds a request made before
// appfront restarted, with its app line, as it found it before.
func TestRequestLogQueryAfterRestart(t *testing.T) {
	bin := os.Getenv("APPENGINE_DEV_APPSERVER_BINARY")
	if bin == "" {
		t.Skip("APPENGINE_DEV_APPSERVER_BINARY is not set (run through tests/go/run.sh)")
	}
	dir := t.TempDir()
	app := reqlogApp(t, dir)
	logsPath := "--logs_path=" + filepath.Join(dir, "logs.db")
	_, get, stop := startReqlogAppfront(t, bin, dir, app, logsPath)
	marker := fmt.Sprintf("kept across a restart %d", time.Now().UnixNano())
	id := get("/logme?marker=" + strings.ReplaceAll(marker, " ", "+"))
	before := get("/query?id=" + id)
	stop()

	_, get, stop = startReqlogAppfront(t, bin, dir, app, logsPath)
	defer stop()
	after := get("/query?id=" + id)
	var logs []queriedLog
	if err := json.Unmarshal([]byte(after), &logs); err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 || logs[0].RequestID != id || logs[0].Status != 200 ||
		len(logs[0].Lines) != 1 || logs[0].Lines[0] != marker {
		t.Fatalf("log.Query for %s after the restart: %s, want the request and its line %q",
			id, after, marker)
	}
	if after != before {
		t.Errorf("after the restart log.Query answered\n%s\nbefore it\n%s", after, before)
	}
}
