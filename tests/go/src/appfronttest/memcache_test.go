package appfronttest

// The memcache service of appfront driven by the official Go client library
// (google.golang.org/appengine/memcache) through aetest, which starts
// build/appfront as its development server (tests/go/run.sh sets
// APPENGINE_DEV_APPSERVER_BINARY). Every call goes over the real API wire:
// the library's own encoding, groups included, against the server's decoder.

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/appengine"
	"google.golang.org/appengine/memcache"
)

// TestMemcache starts one server for all memcache cases: starting one per
// case would dominate the run time. Cases use distinct keys or namespaces so
// their order does not matter, except Flush, which runs last.
func TestMemcache(t *testing.T) {
	runCases(t, []testCase{
		{"SetGet", memcacheSetGet},
		{"Add", memcacheAdd},
		{"CompareAndSwap", memcacheCompareAndSwap},
		{"Delete", memcacheDelete},
		{"Increment", memcacheIncrement},
		{"Expiration", memcacheExpiration},
		{"Namespaces", memcacheNamespaces},
		{"Codec", memcacheCodec},
		{"Limits", memcacheLimits},
		{"Stats", memcacheStats},
		{"Flush", memcacheFlush},
	})
}

func mustSet(t *testing.T, ctx context.Context, item *memcache.Item) {
	t.Helper()
	if err := memcache.Set(ctx, item); err != nil {
		t.Fatalf("Set(%q): %v", item.Key, err)
	}
}

func mustGet(t *testing.T, ctx context.Context, key string) *memcache.Item {
	t.Helper()
	item, err := memcache.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return item
}

func wantMiss(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	if item, err := memcache.Get(ctx, key); err != memcache.ErrCacheMiss {
		t.Fatalf("Get(%q) = %v, %v; want a cache miss", key, item, err)
	}
}

func memcacheSetGet(t *testing.T, ctx context.Context) {
	mustSet(t, ctx, &memcache.Item{Key: "sg-a", Value: []byte("apple"), Flags: 0xfeedface})
	mustSet(t, ctx, &memcache.Item{Key: "sg-empty", Value: []byte{}})
	got := mustGet(t, ctx, "sg-a")
	if string(got.Value) != "apple" || got.Flags != 0xfeedface {
		t.Errorf("Get = %q flags %#x; want \"apple\" flags 0xfeedface", got.Value, got.Flags)
	}
	if got := mustGet(t, ctx, "sg-empty"); len(got.Value) != 0 {
		t.Errorf("empty value came back as %q", got.Value)
	}
	mustSet(t, ctx, &memcache.Item{Key: "sg-a", Value: []byte("apricot")})
	if got := mustGet(t, ctx, "sg-a"); string(got.Value) != "apricot" || got.Flags != 0 {
		t.Errorf("after overwrite: %q flags %#x", got.Value, got.Flags)
	}

	// Binary values survive unchanged.
	bin := []byte{0, 1, 2, 0xff, 0x0b, 0x0c, 0}
	mustSet(t, ctx, &memcache.Item{Key: "sg-bin", Value: bin})
	if got := mustGet(t, ctx, "sg-bin"); string(got.Value) != string(bin) {
		t.Errorf("binary value came back as % x", got.Value)
	}

	items := []*memcache.Item{
		{Key: "sg-m1", Value: []byte("1")},
		{Key: "sg-m2", Value: []byte("2")},
	}
	if err := memcache.SetMulti(ctx, items); err != nil {
		t.Fatalf("SetMulti: %v", err)
	}
	m, err := memcache.GetMulti(ctx, []string{"sg-m1", "sg-m2", "sg-missing"})
	if err != nil {
		t.Fatalf("GetMulti: %v", err)
	}
	if len(m) != 2 || string(m["sg-m1"].Value) != "1" || string(m["sg-m2"].Value) != "2" {
		t.Errorf("GetMulti = %v; want sg-m1 and sg-m2 only", m)
	}
	wantMiss(t, ctx, "sg-missing")
}

func memcacheAdd(t *testing.T, ctx context.Context) {
	if err := memcache.Add(ctx, &memcache.Item{Key: "add", Value: []byte("first")}); err != nil {
		t.Fatalf("Add of a new key: %v", err)
	}
	if err := memcache.Add(ctx, &memcache.Item{Key: "add", Value: []byte("second")}); err != memcache.ErrNotStored {
		t.Fatalf("Add of an existing key = %v; want ErrNotStored", err)
	}
	if got := mustGet(t, ctx, "add"); string(got.Value) != "first" {
		t.Errorf("value after refused Add = %q", got.Value)
	}
	err := memcache.AddMulti(ctx, []*memcache.Item{
		{Key: "add", Value: []byte("x")},
		{Key: "add-2", Value: []byte("y")},
	})
	me, ok := err.(appengine.MultiError)
	if !ok || len(me) != 2 || me[0] != memcache.ErrNotStored || me[1] != nil {
		t.Errorf("AddMulti = %v; want [ErrNotStored, nil]", err)
	}
}

func memcacheCompareAndSwap(t *testing.T, ctx context.Context) {
	mustSet(t, ctx, &memcache.Item{Key: "cas", Value: []byte("v1")})
	a := mustGet(t, ctx, "cas")
	b := mustGet(t, ctx, "cas")

	a.Value = []byte("from-a")
	if err := memcache.CompareAndSwap(ctx, a); err != nil {
		t.Fatalf("first CompareAndSwap: %v", err)
	}
	b.Value = []byte("from-b")
	if err := memcache.CompareAndSwap(ctx, b); err != memcache.ErrCASConflict {
		t.Fatalf("stale CompareAndSwap = %v; want ErrCASConflict", err)
	}
	if got := mustGet(t, ctx, "cas"); string(got.Value) != "from-a" {
		t.Errorf("value after CAS = %q; want from-a", got.Value)
	}

	c := mustGet(t, ctx, "cas")
	if err := memcache.Delete(ctx, "cas"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := memcache.CompareAndSwap(ctx, c); err != memcache.ErrNotStored {
		t.Fatalf("CompareAndSwap of a deleted item = %v; want ErrNotStored", err)
	}
}

func memcacheDelete(t *testing.T, ctx context.Context) {
	mustSet(t, ctx, &memcache.Item{Key: "del", Value: []byte("v")})
	if err := memcache.Delete(ctx, "del"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMiss(t, ctx, "del")
	if err := memcache.Delete(ctx, "del"); err != memcache.ErrCacheMiss {
		t.Fatalf("second Delete = %v; want ErrCacheMiss", err)
	}
	mustSet(t, ctx, &memcache.Item{Key: "del-1", Value: []byte("v")})
	err := memcache.DeleteMulti(ctx, []string{"del-1", "del-none"})
	me, ok := err.(appengine.MultiError)
	if !ok || len(me) != 2 || me[0] != nil || me[1] != memcache.ErrCacheMiss {
		t.Errorf("DeleteMulti = %v; want [nil, ErrCacheMiss]", err)
	}
	wantMiss(t, ctx, "del-1")
}

func memcacheIncrement(t *testing.T, ctx context.Context) {
	v, err := memcache.Increment(ctx, "incr", 5, 10)
	if err != nil || v != 15 {
		t.Fatalf("Increment from initial 10 by 5 = %d, %v; want 15", v, err)
	}
	if got := mustGet(t, ctx, "incr"); string(got.Value) != "15" {
		t.Errorf("stored counter = %q; want \"15\"", got.Value)
	}
	if v, err = memcache.Increment(ctx, "incr", -20, 0); err != nil || v != 0 {
		t.Errorf("decrement below zero = %d, %v; want 0 (clamped)", v, err)
	}
	if v, err = memcache.IncrementExisting(ctx, "incr", 7); err != nil || v != 7 {
		t.Errorf("IncrementExisting = %d, %v; want 7", v, err)
	}
	if v, err = memcache.IncrementExisting(ctx, "incr-none", 1); err != memcache.ErrCacheMiss {
		t.Errorf("IncrementExisting of a missing key = %d, %v; want ErrCacheMiss", v, err)
	}

	// Unsigned 64-bit: the top value wraps around to zero.
	mustSet(t, ctx, &memcache.Item{Key: "incr-max", Value: []byte("18446744073709551615")})
	if v, err = memcache.IncrementExisting(ctx, "incr-max", 2); err != nil || v != 1 {
		t.Errorf("overflow = %d, %v; want 1", v, err)
	}

	// A value that is not a number is an API error, not a miss.
	mustSet(t, ctx, &memcache.Item{Key: "incr-text", Value: []byte("abc")})
	if _, err = memcache.IncrementExisting(ctx, "incr-text", 1); err == nil || err == memcache.ErrCacheMiss {
		t.Errorf("Increment of a non-number = %v; want an API error", err)
	}
}

func memcacheExpiration(t *testing.T, ctx context.Context) {
	mustSet(t, ctx, &memcache.Item{Key: "exp-1s", Value: []byte("v"), Expiration: time.Second})
	// Below a second the library sends an absolute time already past.
	mustSet(t, ctx, &memcache.Item{Key: "exp-now", Value: []byte("v"), Expiration: 500 * time.Millisecond})
	// Beyond 30 days the library still sends relative seconds.
	mustSet(t, ctx, &memcache.Item{Key: "exp-60d", Value: []byte("v"), Expiration: 60 * 24 * time.Hour})
	// 30 years and more is sent as an absolute Unix time.
	mustSet(t, ctx, &memcache.Item{Key: "exp-31y", Value: []byte("v"), Expiration: 31 * 365 * 24 * time.Hour})

	wantMiss(t, ctx, "exp-now")
	mustGet(t, ctx, "exp-60d")
	mustGet(t, ctx, "exp-31y")
	time.Sleep(2100 * time.Millisecond)
	wantMiss(t, ctx, "exp-1s")
	mustGet(t, ctx, "exp-60d")
}

func memcacheNamespaces(t *testing.T, ctx context.Context) {
	a, err := appengine.Namespace(ctx, "ns-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := appengine.Namespace(ctx, "ns-b")
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, a, &memcache.Item{Key: "ns-key", Value: []byte("in-a")})
	mustSet(t, b, &memcache.Item{Key: "ns-key", Value: []byte("in-b")})
	wantMiss(t, ctx, "ns-key")
	if got := mustGet(t, a, "ns-key"); string(got.Value) != "in-a" {
		t.Errorf("namespace a holds %q", got.Value)
	}
	if got := mustGet(t, b, "ns-key"); string(got.Value) != "in-b" {
		t.Errorf("namespace b holds %q", got.Value)
	}
	if err := memcache.Delete(ctx, "ns-key"); err != memcache.ErrCacheMiss {
		t.Errorf("Delete in the default namespace = %v; want ErrCacheMiss", err)
	}
	if err := memcache.Delete(a, "ns-key"); err != nil {
		t.Errorf("Delete in namespace a: %v", err)
	}
	mustGet(t, b, "ns-key")
	if v, err := memcache.Increment(a, "ns-counter", 1, 0); err != nil || v != 1 {
		t.Errorf("Increment in namespace a = %d, %v", v, err)
	}
	if _, err := memcache.IncrementExisting(b, "ns-counter", 1); err != memcache.ErrCacheMiss {
		t.Errorf("counter leaked into namespace b: %v", err)
	}
}

func memcacheCodec(t *testing.T, ctx context.Context) {
	type record struct {
		Name  string
		Count int
	}
	in := record{"gopher", 3}
	if err := memcache.JSON.Set(ctx, &memcache.Item{Key: "codec-json", Object: in}); err != nil {
		t.Fatalf("JSON.Set: %v", err)
	}
	var out record
	if _, err := memcache.JSON.Get(ctx, "codec-json", &out); err != nil || out != in {
		t.Errorf("JSON.Get = %+v, %v; want %+v", out, err, in)
	}
	if err := memcache.Gob.Set(ctx, &memcache.Item{Key: "codec-gob", Object: in}); err != nil {
		t.Fatalf("Gob.Set: %v", err)
	}
	out = record{}
	if _, err := memcache.Gob.Get(ctx, "codec-gob", &out); err != nil || out != in {
		t.Errorf("Gob.Get = %+v, %v; want %+v", out, err, in)
	}
}

func memcacheLimits(t *testing.T, ctx context.Context) {
	// An item is at most 1 MiB, key and value together.
	key := "limit"
	value := make([]byte, 1<<20-len(key))
	mustSet(t, ctx, &memcache.Item{Key: key, Value: value})
	if got := mustGet(t, ctx, key); len(got.Value) != len(value) {
		t.Errorf("1 MiB item came back with %d value bytes", len(got.Value))
	}
	value = append(value, 'x')
	err := memcache.Set(ctx, &memcache.Item{Key: key + "-over", Value: value})
	if err != memcache.ErrServerError {
		t.Errorf("Set of an item over 1 MiB = %v; want ErrServerError", err)
	}
	wantMiss(t, ctx, key+"-over")

	// Keys are at most 250 bytes.
	long := strings.Repeat("k", 250)
	mustSet(t, ctx, &memcache.Item{Key: long, Value: []byte("v")})
	mustGet(t, ctx, long)
	if err := memcache.Set(ctx, &memcache.Item{Key: long + "k", Value: []byte("v")}); err != memcache.ErrServerError {
		t.Errorf("Set with a 251-byte key = %v; want ErrServerError", err)
	}
	if _, err := memcache.Get(ctx, long+"k"); err == nil || err == memcache.ErrCacheMiss {
		t.Errorf("Get with a 251-byte key = %v; want an API error", err)
	}
}

func memcacheStats(t *testing.T, ctx context.Context) {
	before, err := memcache.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	mustSet(t, ctx, &memcache.Item{Key: "stats", Value: []byte("12345")})
	mustGet(t, ctx, "stats")
	wantMiss(t, ctx, "stats-missing")
	after, err := memcache.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if after.Hits != before.Hits+1 || after.Misses != before.Misses+1 {
		t.Errorf("hits %d→%d, misses %d→%d; want one more of each",
			before.Hits, after.Hits, before.Misses, after.Misses)
	}
	// Key and value bytes of the hit: "stats" + "12345".
	if after.ByteHits != before.ByteHits+10 {
		t.Errorf("byte hits %d→%d; want +10", before.ByteHits, after.ByteHits)
	}
	if after.Items == 0 || after.Bytes == 0 || after.Items < before.Items {
		t.Errorf("items %d bytes %d after a Set", after.Items, after.Bytes)
	}
	if after.Oldest < 0 {
		t.Errorf("oldest item age %d", after.Oldest)
	}
}

func memcacheFlush(t *testing.T, ctx context.Context) {
	mustSet(t, ctx, &memcache.Item{Key: "flush", Value: []byte("v")})
	ns, err := appengine.Namespace(ctx, "flush-ns")
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, ns, &memcache.Item{Key: "flush", Value: []byte("v")})
	if err := memcache.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	wantMiss(t, ctx, "flush")
	wantMiss(t, ns, "flush")
	s, err := memcache.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if s.Items != 0 || s.Bytes != 0 {
		t.Errorf("after Flush: %d items, %d bytes; want none", s.Items, s.Bytes)
	}
	if s.Hits == 0 {
		t.Errorf("Flush reset the hit counter")
	}
}
