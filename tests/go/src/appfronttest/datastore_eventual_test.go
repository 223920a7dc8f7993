package appfronttest

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/aetest"
	"google.golang.org/appengine/datastore"
)

// Eventual consistency through the official library (docs/datastore.md,
// "Consistency"). aetest starts appfront without
// --datastore_consistency_policy, so the default, time, applies: a write
// reaches global queries 100 ms after it is acknowledged at the soonest
// (2 s for 99.5% of writes), while Get and ancestor queries see it at once.

type ecItem struct{ N int }

// globalCount is a non-ancestor (global) query of kind.
func globalCount(ctx context.Context, kind string) (int, error) {
	return datastore.NewQuery(kind).Count(ctx)
}

func TestDatastoreEventual(t *testing.T) {
	ctx := newContext(t)

	// A global query right after the Put misses it, as long as both took
	// less than the shortest delay (100 ms): a few tries, so that one slow
	// moment of a loaded machine cannot make the check vacuous or wrong.
	fast := false
	var kind string
	var root *datastore.Key
	for try := 0; try < 5 && !fast; try++ {
		kind = fmt.Sprintf("EC%d", try)
		root = datastore.NewKey(ctx, kind, "root", 0, nil)
		start := time.Now()
		if _, err := datastore.Put(ctx, root, &ecItem{1}); err != nil {
			t.Fatal(err)
		}
		n, err := globalCount(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) >= 100*time.Millisecond {
			continue // too slow to say anything
		}
		fast = true
		if n != 0 {
			t.Fatalf("a global query %v after the Put saw it (count %d); want 0 under the time policy",
				time.Since(start), n)
		}
	}
	if !fast {
		t.Fatal("no Put and query took less than 100 ms in 5 tries")
	}

	// An ancestor query and a Get see it at once.
	var got []ecItem
	if _, err := datastore.NewQuery(kind).Ancestor(root).GetAll(ctx, &got); err != nil || len(got) != 1 {
		t.Fatalf("ancestor query = %v, %v; want the entity", got, err)
	}
	var one ecItem
	if err := datastore.Get(ctx, root, &one); err != nil || one.N != 1 {
		t.Fatalf("Get = %+v, %v", one, err)
	}
	// Which rolled the group forward: global queries see it from now on.
	if n, err := globalCount(ctx, kind); err != nil || n != 1 {
		t.Fatalf("global count after the ancestor query = %d, %v; want 1", n, err)
	}

	// Left alone, a write shows in a global query after its delay.
	other := datastore.NewKey(ctx, kind, "other", 0, nil)
	start := time.Now()
	if _, err := datastore.Put(ctx, other, &ecItem{2}); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := globalCount(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the write is not visible to a global query after %v", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("visible after %v; no delay is shorter than 100 ms", d)
	}
	t.Logf("visible to a global query after %v", time.Since(start))
}

// With StronglyConsistentDatastore (--datastore_consistency_policy=consistent),
// a global query sees a write at once.
func TestDatastoreStronglyConsistent(t *testing.T) {
	inst, err := aetest.NewInstance(&aetest.Options{
		SuppressDevAppServerLog:     true,
		StronglyConsistentDatastore: true,
		StartupTimeout:              60 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	req, err := inst.NewRequest("GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := appengine.NewContext(req)
	for i := 0; i < 20; i++ {
		k := datastore.NewKey(ctx, "SC", "", int64(i+1), nil)
		if _, err := datastore.Put(ctx, k, &ecItem{i}); err != nil {
			t.Fatal(err)
		}
		if n, err := globalCount(ctx, "SC"); err != nil || n != i+1 {
			t.Fatalf("global count right after Put %d = %d, %v; want %d", i+1, n, err, i+1)
		}
	}
}
