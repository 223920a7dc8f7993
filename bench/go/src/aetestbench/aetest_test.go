// Package aetestbench times the official Go library's aetest.NewInstance
// followed by Close against appfront (bench/run.sh, "Startup").
//
// aetest execs $APPENGINE_DEV_APPSERVER_BINARY with dev_appserver's flags,
// waits for the "Starting API server" and "Starting admin server" lines on
// its stderr, and Close calls the admin server's /quit and waits for the
// process to exit: this is what every Go App Engine test suite pays per
// instance.
package aetestbench

import (
	"encoding/json"
	"os"
	"sort"
	"testing"
	"time"

	"google.golang.org/appengine/aetest"
)

// samples holds the duration of every iteration of the last run of the
// benchmark (the testing package calls it first with b.N = 1).
var samples []time.Duration

func BenchmarkNewInstanceClose(b *testing.B) {
	samples = samples[:0]
	opts := &aetest.Options{SuppressDevAppServerLog: true}
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		inst, err := aetest.NewInstance(opts)
		if err != nil {
			b.Fatalf("NewInstance: %v", err)
		}
		if err := inst.Close(); err != nil {
			b.Fatalf("Close: %v", err)
		}
		samples = append(samples, time.Since(t0))
	}
	writeSamples(b)
}

// writeSamples writes the samples as JSON to $AETEST_BENCH_OUT, if set.
func writeSamples(b *testing.B) {
	path := os.Getenv("AETEST_BENCH_OUT")
	if path == "" || len(samples) == 0 {
		return
	}
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	sorted := append([]float64(nil), ms...)
	sort.Float64s(sorted)
	out, _ := json.Marshal(map[string]interface{}{
		"runs":       len(ms),
		"samples_ms": ms,
		"min_ms":     sorted[0],
		"median_ms":  sorted[len(sorted)/2],
		"max_ms":     sorted[len(sorted)-1],
	})
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		b.Fatalf("writing %s: %v", path, err)
	}
}
