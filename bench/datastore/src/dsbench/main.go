// Command dsbench measures appfront's datastore_v3 through the official Go
// client library (google.golang.org/appengine/datastore), the way an app
// uses it: aetest starts build/appfront and every call is a real API call
// over HTTP. Run it with bench/datastore/run.sh.
//
// Phases, each timed call by call (one client goroutine: the datastore
// backend is serialized anyway, so this is the latency an app sees):
//  1. N single-entity Puts with incomplete keys (N = 10,000 by default);
//  2. N Gets by key, in a shuffled order;
//  3. filtered, ordered queries over the N entities: an equality filter
//     plus a descending sort, and a range filter on the sorted property,
//     each returning the first 20 results; then one query that reads
//     1,000 entities (GetAll);
//  4. Count of a filtered query over all N entities.
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"time"

	"google.golang.org/appengine"
	"google.golang.org/appengine/aetest"
	"google.golang.org/appengine/datastore"
)

type Score struct {
	Player string
	Group  int64
	Points int64
	When   time.Time
	Note   string `datastore:",noindex"`
}

type stats struct {
	name string
	lat  []time.Duration
	wall time.Duration
}

func (s *stats) report() {
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	q := func(p float64) time.Duration { return s.lat[int(p*float64(len(s.lat)-1))] }
	fmt.Printf("| %s | %d | %.2f s | %.0f | %s | %s | %s |\n", s.name, len(s.lat), s.wall.Seconds(),
		float64(len(s.lat))/s.wall.Seconds(), q(0.5).Round(time.Microsecond),
		q(0.99).Round(time.Microsecond), q(1).Round(time.Microsecond))
}

// closeInst stops appfront before an early exit (os.Exit skips defers,
// and an orphaned appfront would hold the caller's stdout open).
var closeInst = func() {}

func timed(name string, n int, fn func(i int) error) {
	s := &stats{name: name, lat: make([]time.Duration, 0, n)}
	start := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := fn(i); err != nil {
			fmt.Fprintf(os.Stderr, "%s #%d: %v\n", name, i, err)
			closeInst()
			os.Exit(1)
		}
		s.lat = append(s.lat, time.Since(t))
	}
	s.wall = time.Since(start)
	s.report()
}

func main() {
	n := flag.Int("n", 10000, "entities")
	queries := flag.Int("queries", 500, "queries per query shape")
	flag.Parse()

	// Strongly consistent (--datastore_consistency_policy=consistent): the
	// queries and counts below measure the datastore over all N entities,
	// which the default policy would leave partly unapplied for a while.
	inst, err := aetest.NewInstance(&aetest.Options{SuppressDevAppServerLog: true,
		StronglyConsistentDatastore: true, StartupTimeout: 60 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "aetest:", err)
		os.Exit(1)
	}
	defer inst.Close()
	closeInst = func() { inst.Close() }
	req, _ := inst.NewRequest("GET", "/", nil)
	ctx := appengine.NewContext(req)
	rng := rand.New(rand.NewSource(1))

	fmt.Printf("| operation | calls | wall | calls/s | p50 | p99 | max |\n")
	fmt.Printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	keys := make([]*datastore.Key, *n)
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	timed(fmt.Sprintf("Put, one entity per call (%d)", *n), *n, func(i int) error {
		e := &Score{Player: fmt.Sprintf("player-%05d", i), Group: int64(i % 10),
			Points: rng.Int63n(1000000), When: base.Add(time.Duration(i) * time.Second),
			Note: "a note that is not indexed"}
		k, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Score", nil), e)
		keys[i] = k
		return err
	})
	order := rng.Perm(*n)
	timed("Get by key", *n, func(i int) error {
		var e Score
		return datastore.Get(ctx, keys[order[i]], &e)
	})
	timed("Query: Group = g, order by -Points, first 20", *queries, func(i int) error {
		var out []Score
		_, err := datastore.NewQuery("Score").Filter("Group =", int64(i%10)).Order("-Points").
			Limit(20).GetAll(ctx, &out)
		if err == nil && len(out) != 20 {
			err = fmt.Errorf("%d results", len(out))
		}
		return err
	})
	timed("Query: Points >= x, order by Points, first 20", *queries, func(i int) error {
		var out []Score
		_, err := datastore.NewQuery("Score").Filter("Points >=", rng.Int63n(900000)).
			Order("Points").Limit(20).GetAll(ctx, &out)
		return err
	})
	timed("Query: Group = g, Points < x, order by Points, keys only, first 20", *queries, func(i int) error {
		_, err := datastore.NewQuery("Score").Filter("Group =", int64(i%10)).
			Filter("Points <", rng.Int63n(1000000)).Order("Points").Limit(20).KeysOnly().GetAll(ctx, nil)
		return err
	})
	if *n < 1000 {
		return
	}
	timed("Query: order by When, read 1,000 entities", 20, func(i int) error {
		var out []Score
		_, err := datastore.NewQuery("Score").Order("When").Offset(i*100%(*n-999)).Limit(1000).GetAll(ctx, &out)
		if err == nil && len(out) != 1000 {
			err = fmt.Errorf("%d results", len(out))
		}
		return err
	})
	timed(fmt.Sprintf("Count: Group = g over %d", *n), 20, func(i int) error {
		c, err := datastore.NewQuery("Score").Filter("Group =", int64(i%10)).Count(ctx)
		if err == nil && c != *n/10 {
			err = fmt.Errorf("count %d", c)
		}
		return err
	})
}
