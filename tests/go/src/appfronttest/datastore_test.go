package appfronttest

// The datastore_v3 service of appfront driven by the official Go client
// library (google.golang.org/appengine/datastore) through aetest. One
// appfront serves every case; cases use their own kinds or namespaces, so
// their order does not matter.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/appengine"
	"google.golang.org/appengine/aetest"
	"google.golang.org/appengine/datastore"
)

// TestDatastore checks query semantics and snapshot isolation, which need
// every write visible to every query at once: it runs with aetest's
// StronglyConsistentDatastore, as an App Engine project's tests of the same
// things would (datastore_eventual_test.go covers the default policy).
func TestDatastore(t *testing.T) {
	runCasesWith(t, aetest.Options{StronglyConsistentDatastore: true}, []testCase{
		{"PropertyTypes", dsPropertyTypes},
		{"Ids", dsIds},
		{"GetMultiDelete", dsGetMultiDelete},
		{"Limits", dsLimits},
		{"QueryFilters", dsQueryFilters},
		{"QueryOrders", dsQueryOrders},
		{"QueryMultiValued", dsQueryMultiValued},
		{"QueryKeysOnlyCount", dsQueryKeysOnlyCount},
		{"QueryProjectionDistinct", dsQueryProjectionDistinct},
		{"QueryAncestorKindless", dsQueryAncestorKindless},
		{"QueryKeyFilters", dsQueryKeyFilters},
		{"QueryUnsupported", dsQueryUnsupported},
		{"Cursors", dsCursors},
		{"Namespaces", dsNamespaces},
		{"Metadata", dsMetadata},
		{"TxnCommitRollback", dsTxnCommitRollback},
		{"TxnConflict", dsTxnConflict},
		{"TxnConcurrent", dsTxnConcurrent},
		{"TxnSnapshot", dsTxnSnapshot},
		{"TxnCrossGroup", dsTxnCrossGroup},
		{"TxnRetry", dsTxnRetry},
	})
}

// Every type the library can store.
type allTypes struct {
	S     string
	I     int64
	I32   int32
	F     float64
	B     bool
	T     time.Time
	Blob  []byte
	BS    datastore.ByteString
	K     *datastore.Key
	G     appengine.GeoPoint
	Multi []string
	Long  string `datastore:",noindex"`
	Nil   *datastore.Key
}

func dsPropertyTypes(t *testing.T, ctx context.Context) {
	ref := datastore.NewKey(ctx, "Ref", "target", 0, datastore.NewKey(ctx, "Parent", "", 7, nil))
	want := allTypes{
		S:     "héllo\x00world",
		I:     -1 << 62,
		I32:   -5,
		F:     3.25e-7,
		B:     true,
		T:     time.Date(2021, 3, 4, 5, 6, 7, 123456000, time.UTC), // microseconds kept
		Blob:  []byte{0, 1, 2, 0xff, 0},
		BS:    datastore.ByteString("short\x00bytes"),
		K:     ref,
		G:     appengine.GeoPoint{Lat: 48.85, Lng: -2.35},
		Multi: []string{"b", "a", "c"},
		Long:  strings.Repeat("long text ", 1000), // 10 kB, over the 1500-byte index limit
	}
	k, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Types", nil), &want)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	var got allTypes
	if err := datastore.Get(ctx, k, &got); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !got.T.Equal(want.T) {
		t.Errorf("time: got %v, want %v", got.T, want.T)
	}
	got.T = want.T
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}

	// Every indexed type is queryable by equality.
	for _, f := range []struct {
		field string
		value interface{}
	}{
		{"S =", want.S}, {"I =", want.I}, {"F =", want.F}, {"B =", want.B},
		{"T =", want.T}, {"K =", want.K}, {"G =", want.G},
		{"Multi =", "a"}, {"Nil =", nil},
	} {
		n, err := datastore.NewQuery("Types").Filter(f.field, f.value).Count(ctx)
		if err != nil || n != 1 {
			t.Errorf("Filter(%q, %v).Count = %d, %v; want 1", f.field, f.value, n, err)
		}
	}
	// Unindexed values are not.
	n, err := datastore.NewQuery("Types").Filter("Long =", want.Long).Count(ctx)
	if err != nil || n != 0 {
		t.Errorf("a noindex property matched a filter: %d, %v", n, err)
	}
}

func dsIds(t *testing.T, ctx context.Context) {
	type E struct{ N int }
	seen := map[int64]bool{}
	// Incomplete keys, one by one and in a batch.
	for i := 0; i < 5; i++ {
		k, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Ids", nil), &E{i})
		if err != nil || k.IntID() <= 0 || seen[k.IntID()] {
			t.Fatalf("Put %d: key %v, err %v (seen: %v)", i, k, err, seen)
		}
		seen[k.IntID()] = true
	}
	keys := make([]*datastore.Key, 10)
	for i := range keys {
		keys[i] = datastore.NewIncompleteKey(ctx, "Ids", nil)
	}
	keys, err := datastore.PutMulti(ctx, keys, make([]E, 10))
	if err != nil {
		t.Fatalf("PutMulti: %v", err)
	}
	for _, k := range keys {
		if seen[k.IntID()] {
			t.Fatalf("id %d handed out twice", k.IntID())
		}
		seen[k.IntID()] = true
	}
	// AllocateIDs reserves a range no Put will use.
	lo, hi, err := datastore.AllocateIDs(ctx, "Ids", nil, 100)
	if err != nil || hi-lo != 100 {
		t.Fatalf("AllocateIDs = %d, %d, %v", lo, hi, err)
	}
	for id := lo; id < hi; id++ {
		if seen[id] {
			t.Fatalf("AllocateIDs returned id %d already used", id)
		}
	}
	k, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Ids", nil), &E{})
	if err != nil || (k.IntID() >= lo && k.IntID() < hi) || seen[k.IntID()] {
		t.Fatalf("Put after AllocateIDs got id %d (range [%d,%d)), err %v", k.IntID(), lo, hi, err)
	}
	// An explicit id is never handed out later.
	explicit := k.IntID() + 1000
	if _, err := datastore.Put(ctx, datastore.NewKey(ctx, "Ids", "", explicit, nil), &E{}); err != nil {
		t.Fatalf("Put explicit: %v", err)
	}
	for i := 0; i < 3; i++ {
		k, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Ids", nil), &E{})
		if err != nil || k.IntID() <= explicit {
			t.Fatalf("auto id %d after explicit %d (err %v)", k.IntID(), explicit, err)
		}
	}
	// AllocateIDRange over free ids succeeds; over used ones it reports them.
	if err := datastore.AllocateIDRange(ctx, "IdsRange", nil, explicit+1000, explicit+1010); err != nil {
		t.Errorf("AllocateIDRange over free ids: %v", err)
	}
	if err := datastore.AllocateIDRange(ctx, "Ids", nil, explicit, explicit); err == nil {
		t.Errorf("AllocateIDRange over an existing entity succeeded")
	}
}

func dsGetMultiDelete(t *testing.T, ctx context.Context) {
	type E struct{ V string }
	a := datastore.NewKey(ctx, "GM", "a", 0, nil)
	b := datastore.NewKey(ctx, "GM", "b", 0, nil)
	missing := datastore.NewKey(ctx, "GM", "missing", 0, nil)
	if _, err := datastore.PutMulti(ctx, []*datastore.Key{a, b}, []E{{"A"}, {"B"}}); err != nil {
		t.Fatalf("PutMulti: %v", err)
	}
	dst := make([]E, 3)
	err := datastore.GetMulti(ctx, []*datastore.Key{a, missing, b}, dst)
	me, ok := err.(appengine.MultiError)
	if !ok || me[0] != nil || me[1] != datastore.ErrNoSuchEntity || me[2] != nil {
		t.Fatalf("GetMulti = %v; want only the middle key missing", err)
	}
	if dst[0].V != "A" || dst[2].V != "B" {
		t.Errorf("GetMulti values = %+v", dst)
	}
	// Overwrite, then delete.
	if _, err := datastore.Put(ctx, a, &E{"A2"}); err != nil {
		t.Fatal(err)
	}
	var e E
	if err := datastore.Get(ctx, a, &e); err != nil || e.V != "A2" {
		t.Fatalf("after overwrite: %+v, %v", e, err)
	}
	if n, _ := datastore.NewQuery("GM").Filter("V =", "A").Count(ctx); n != 0 {
		t.Errorf("the overwritten value is still indexed (%d results)", n)
	}
	if err := datastore.DeleteMulti(ctx, []*datastore.Key{a, missing}); err != nil {
		t.Fatalf("DeleteMulti: %v", err)
	}
	if err := datastore.Get(ctx, a, &e); err != datastore.ErrNoSuchEntity {
		t.Fatalf("Get after Delete = %v", err)
	}
	if n, _ := datastore.NewQuery("GM").Count(ctx); n != 1 {
		t.Errorf("after delete, %d entities of kind GM; want 1", n)
	}
}

func isBadRequest(err error) bool {
	return err != nil && strings.Contains(err.Error(), "BAD_REQUEST")
}

func dsLimits(t *testing.T, ctx context.Context) {
	type Big struct {
		B []byte `datastore:",noindex"`
	}
	_, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Big", nil), &Big{make([]byte, 1<<20+1)})
	if !isBadRequest(err) {
		t.Errorf("Put of a 1 MiB entity = %v; want BAD_REQUEST", err)
	}
	if _, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Big", nil), &Big{make([]byte, 1<<19)}); err != nil {
		t.Errorf("Put of a 512 KiB entity: %v", err)
	}
	type Str struct{ S string }
	_, err = datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "Big", nil), &Str{strings.Repeat("x", 1501)})
	if !isBadRequest(err) {
		t.Errorf("Put of an indexed 1501-byte string = %v; want BAD_REQUEST", err)
	}
}

type item struct {
	Name  string
	N     int64
	F     float64
	Group string
	Tags  []string
}

// seed stores items of kind under their Name and returns nothing; fails
// the test on error.
func seed(t *testing.T, ctx context.Context, kind string, items []item) {
	t.Helper()
	keys := make([]*datastore.Key, len(items))
	for i, it := range items {
		keys[i] = datastore.NewKey(ctx, kind, it.Name, 0, nil)
	}
	if _, err := datastore.PutMulti(ctx, keys, items); err != nil {
		t.Fatalf("seeding %s: %v", kind, err)
	}
}

func names(t *testing.T, ctx context.Context, q *datastore.Query) string {
	t.Helper()
	var got []item
	keys, err := q.GetAll(ctx, &got)
	if err != nil {
		t.Fatalf("GetAll: %v", err)
	}
	var out []string
	for i, it := range got {
		if keys[i].StringID() != it.Name {
			t.Errorf("result %d: key %v holds %q", i, keys[i], it.Name)
		}
		out = append(out, it.Name)
	}
	return strings.Join(out, ",")
}

func keyNames(t *testing.T, ctx context.Context, q *datastore.Query) string {
	t.Helper()
	keys, err := q.KeysOnly().GetAll(ctx, nil)
	if err != nil {
		t.Fatalf("GetAll keys-only: %v", err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, k.StringID())
	}
	return strings.Join(out, ",")
}

var qItems = []item{
	{"a", 5, 1.5, "x", []string{"red", "blue"}},
	{"b", 3, -2, "y", []string{"green"}},
	{"c", 9, 0, "x", nil},
	{"d", 3, 7.25, "y", []string{"blue"}},
	{"e", 1, 1e10, "z", []string{"red"}},
	{"f", 7, -0.5, "x", []string{"blue", "green", "red"}},
}

func dsQueryFilters(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QF", qItems)
	for _, c := range []struct {
		q    *datastore.Query
		want string
	}{
		{datastore.NewQuery("QF"), "a,b,c,d,e,f"},
		{datastore.NewQuery("QF").Filter("N =", 3), "b,d"},
		{datastore.NewQuery("QF").Filter("N >", 3), "a,f,c"},
		{datastore.NewQuery("QF").Filter("N >=", 3).Filter("N <", 7), "b,d,a"},
		{datastore.NewQuery("QF").Filter("N <=", 3), "e,b,d"},
		{datastore.NewQuery("QF").Filter("Group =", "x").Filter("N >", 5), "f,c"},
		{datastore.NewQuery("QF").Filter("Group =", "y").Filter("N =", 3), "b,d"},
		{datastore.NewQuery("QF").Filter("F <", 0.0), "b,f"},
		// An integer bound never matches doubles, nor strings.
		{datastore.NewQuery("QF").Filter("F <", 0), ""},
		{datastore.NewQuery("QF").Filter("Name >", "c").Filter("Name <=", "e"), "d,e"},
		{datastore.NewQuery("QF").Filter("N >", 100), ""},
		{datastore.NewQuery("QF").Filter("Name >", 0), ""},
		{datastore.NewQuery("QF").Filter("N =", 3).Limit(1), "b"},
		{datastore.NewQuery("QF").Offset(4), "e,f"},
		{datastore.NewQuery("QF").Order("N").Offset(1).Limit(2), "b,d"},
	} {
		if got := names(t, ctx, c.q); got != c.want {
			t.Errorf("%v: got [%s], want [%s]", c.q, got, c.want)
		}
	}
}

func dsQueryOrders(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QO", qItems)
	for _, c := range []struct {
		q    *datastore.Query
		want string
	}{
		{datastore.NewQuery("QO").Order("N"), "e,b,d,a,f,c"},
		{datastore.NewQuery("QO").Order("-N"), "c,f,a,b,d,e"}, // ties by key, ascending
		{datastore.NewQuery("QO").Order("N").Order("-Name"), "e,d,b,a,f,c"},
		{datastore.NewQuery("QO").Order("Group").Order("-F"), "a,c,f,d,b,e"},
		{datastore.NewQuery("QO").Order("-Group").Order("N"), "e,b,d,a,f,c"},
		{datastore.NewQuery("QO").Order("F"), "b,f,c,a,d,e"},
		{datastore.NewQuery("QO").Order("-__key__"), "f,e,d,c,b,a"},
		{datastore.NewQuery("QO").Filter("N >", 1).Order("-N").Limit(3), "c,f,a"},
		{datastore.NewQuery("QO").Filter("Group =", "x").Order("-N"), "c,f,a"},
	} {
		if got := names(t, ctx, c.q); got != c.want {
			t.Errorf("%v: got [%s], want [%s]", c.q, got, c.want)
		}
	}
	// Iterating in small batches gives the same order.
	it := datastore.NewQuery("QO").Order("N").BatchSize(2).Run(ctx)
	var got []string
	for {
		var e item
		_, err := it.Next(&e)
		if err == datastore.Done {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, e.Name)
	}
	if strings.Join(got, ",") != "e,b,d,a,f,c" {
		t.Errorf("batched iteration: %v", got)
	}
}

func dsQueryMultiValued(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QM", qItems)
	for _, c := range []struct {
		q    *datastore.Query
		want string
	}{
		{datastore.NewQuery("QM").Filter("Tags =", "red"), "a,e,f"},
		{datastore.NewQuery("QM").Filter("Tags =", "red").Filter("Tags =", "blue"), "a,f"},
		{datastore.NewQuery("QM").Filter("Tags =", "blue").Filter("Group =", "y"), "d"},
		// Each entity once, sorted by its smallest (or largest) value.
		{datastore.NewQuery("QM").Order("Tags"), "a,d,f,b,e"},
		{datastore.NewQuery("QM").Order("-Tags"), "a,e,f,b,d"},
		// Within the range, the smallest matching value sorts.
		{datastore.NewQuery("QM").Filter("Tags >", "blue"), "b,f,a,e"},
	} {
		if got := names(t, ctx, c.q); got != c.want {
			t.Errorf("%v: got [%s], want [%s]", c.q, got, c.want)
		}
	}
}

func dsQueryKeysOnlyCount(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QK", qItems)
	if got := keyNames(t, ctx, datastore.NewQuery("QK").Filter("N >", 2).Order("-N")); got != "c,f,a,b,d" {
		t.Errorf("keys-only: %s", got)
	}
	for _, c := range []struct {
		q    *datastore.Query
		want int
	}{
		{datastore.NewQuery("QK"), 6},
		{datastore.NewQuery("QK").Filter("Group =", "x"), 3},
		{datastore.NewQuery("QK").Limit(4), 4},
		{datastore.NewQuery("QK").Offset(2), 4},
		{datastore.NewQuery("QK").Offset(5).Limit(10), 1},
		{datastore.NewQuery("QK").Filter("Tags =", "nothing"), 0},
	} {
		n, err := c.q.Count(ctx)
		if err != nil || n != c.want {
			t.Errorf("%v.Count() = %d, %v; want %d", c.q, n, err, c.want)
		}
	}
	// Count over more rows than one batch.
	type E struct{ I int }
	keys := make([]*datastore.Key, 1500)
	vals := make([]E, len(keys))
	for i := range keys {
		keys[i] = datastore.NewKey(ctx, "QKMany", "", int64(i+1), nil)
		vals[i].I = i
	}
	for i := 0; i < len(keys); i += 500 {
		if _, err := datastore.PutMulti(ctx, keys[i:i+500], vals[i:i+500]); err != nil {
			t.Fatalf("PutMulti: %v", err)
		}
	}
	if n, err := datastore.NewQuery("QKMany").Count(ctx); err != nil || n != 1500 {
		t.Errorf("Count of 1500 = %d, %v", n, err)
	}
	if n, err := datastore.NewQuery("QKMany").Filter("I >=", 1000).Count(ctx); err != nil || n != 500 {
		t.Errorf("filtered Count = %d, %v", n, err)
	}
}

func dsQueryProjectionDistinct(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QP", qItems)
	var got []item
	if _, err := datastore.NewQuery("QP").Project("Group", "N").Order("N").GetAll(ctx, &got); err != nil {
		t.Fatalf("projection: %v", err)
	}
	var s []string
	for _, it := range got {
		if it.Name != "" || it.F != 0 {
			t.Errorf("a projection returned an unprojected property: %+v", it)
		}
		s = append(s, fmt.Sprintf("%s%d", it.Group, it.N))
	}
	if strings.Join(s, ",") != "z1,y3,y3,x5,x7,x9" {
		t.Errorf("projection: %v", s)
	}
	got = nil
	if _, err := datastore.NewQuery("QP").Project("Group").Distinct().GetAll(ctx, &got); err != nil {
		t.Fatalf("distinct: %v", err)
	}
	s = nil
	for _, it := range got {
		s = append(s, it.Group)
	}
	if strings.Join(s, ",") != "x,y,z" {
		t.Errorf("distinct groups: %v", s)
	}
	// A projected multi-valued property gives one result per value.
	type T struct{ Tags string }
	var tags []T
	if _, err := datastore.NewQuery("QP").Project("Tags").Filter("Tags >=", "green").GetAll(ctx, &tags); err != nil {
		t.Fatalf("projection of a multi-valued property: %v", err)
	}
	if len(tags) != 5 {
		t.Errorf("projection of Tags >= green: %v; want 5 results (2 green, 3 red)", tags)
	}
	// Projected times and floats come back typed.
	type TF struct {
		When time.Time
		F    float64
	}
	when := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	if _, err := datastore.Put(ctx, datastore.NewIncompleteKey(ctx, "QPT", nil), &TF{when, 2.5}); err != nil {
		t.Fatal(err)
	}
	var tf []TF
	if _, err := datastore.NewQuery("QPT").Project("When", "F").GetAll(ctx, &tf); err != nil || len(tf) != 1 ||
		!tf[0].When.Equal(when) || tf[0].F != 2.5 {
		t.Errorf("typed projection: %+v, %v", tf, err)
	}
}

func dsQueryAncestorKindless(t *testing.T, ctx context.Context) {
	type E struct{ V int }
	root := datastore.NewKey(ctx, "Root", "r1", 0, nil)
	other := datastore.NewKey(ctx, "Root", "r2", 0, nil)
	child := datastore.NewKey(ctx, "Child", "c1", 0, root)
	grand := datastore.NewKey(ctx, "Grand", "", 5, child)
	keys := []*datastore.Key{
		root, other, child, grand,
		datastore.NewKey(ctx, "Child", "c2", 0, root),
		datastore.NewKey(ctx, "Child", "c3", 0, other),
	}
	if _, err := datastore.PutMulti(ctx, keys, make([]E, len(keys))); err != nil {
		t.Fatal(err)
	}
	got, err := datastore.NewQuery("Child").Ancestor(root).KeysOnly().GetAll(ctx, nil)
	if err != nil || len(got) != 2 || got[0].StringID() != "c1" || got[1].StringID() != "c2" {
		t.Errorf("Child under r1: %v, %v", got, err)
	}
	// Kindless: the ancestor itself and every descendant, in key order.
	got, err = datastore.NewQuery("").Ancestor(root).KeysOnly().GetAll(ctx, nil)
	var s []string
	for _, k := range got {
		s = append(s, k.Kind())
	}
	if err != nil || strings.Join(s, ",") != "Root,Child,Grand,Child" {
		t.Errorf("kindless under r1: %v, %v", s, err)
	}
	got, err = datastore.NewQuery("Grand").Ancestor(child).KeysOnly().GetAll(ctx, nil)
	if err != nil || len(got) != 1 || !got[0].Equal(grand) {
		t.Errorf("Grand under c1: %v, %v", got, err)
	}
}

func dsQueryKeyFilters(t *testing.T, ctx context.Context) {
	seed(t, ctx, "QKey", qItems)
	k := func(n string) *datastore.Key { return datastore.NewKey(ctx, "QKey", n, 0, nil) }
	for _, c := range []struct {
		q    *datastore.Query
		want string
	}{
		{datastore.NewQuery("QKey").Filter("__key__ >", k("b")).Filter("__key__ <=", k("d")), "c,d"},
		{datastore.NewQuery("QKey").Filter("__key__ =", k("e")), "e"},
		{datastore.NewQuery("QKey").Filter("__key__ >=", k("e")).Order("-__key__"), "f,e"},
		{datastore.NewQuery("QKey").Filter("Group =", "x").Filter("__key__ >", k("a")), "c,f"},
	} {
		if got := names(t, ctx, c.q); got != c.want {
			t.Errorf("%v: got [%s], want [%s]", c.q, got, c.want)
		}
	}
	// Ids sort before names.
	type E struct{}
	if _, err := datastore.Put(ctx, datastore.NewKey(ctx, "QKey", "", 99, nil), &E{}); err != nil {
		t.Fatal(err)
	}
	got, err := datastore.NewQuery("QKey").KeysOnly().Limit(1).GetAll(ctx, nil)
	if err != nil || len(got) != 1 || got[0].IntID() != 99 {
		t.Errorf("first key: %v, %v; want the id key", got, err)
	}
}

func dsQueryUnsupported(t *testing.T, ctx context.Context) {
	var dst []item
	_, err := datastore.NewQuery("QF").Filter("N >", 1).Filter("F <", 3).GetAll(ctx, &dst)
	if !isBadRequest(err) || !strings.Contains(err.Error(), "more than one property") {
		t.Errorf("two inequality properties: %v", err)
	}
	_, err = datastore.NewQuery("QF").Filter("N >", 1).Order("F").GetAll(ctx, &dst)
	if !isBadRequest(err) || !strings.Contains(err.Error(), "first sort order") {
		t.Errorf("inequality not sorted first: %v", err)
	}
	_, err = datastore.NewQuery("").Filter("N =", 1).GetAll(ctx, &dst)
	if !isBadRequest(err) || !strings.Contains(err.Error(), "kindless") {
		t.Errorf("kindless property filter: %v", err)
	}
}

func dsCursors(t *testing.T, ctx context.Context) {
	type E struct{ I int }
	keys := make([]*datastore.Key, 25)
	vals := make([]E, len(keys))
	for i := range keys {
		keys[i] = datastore.NewKey(ctx, "Cur", fmt.Sprintf("k%02d", i), 0, nil)
		vals[i].I = i % 5
	}
	if _, err := datastore.PutMulti(ctx, keys, vals); err != nil {
		t.Fatal(err)
	}
	q := datastore.NewQuery("Cur").Order("-I")
	var all []string
	var cursor datastore.Cursor
	pages := 0
	for {
		it := q.Limit(7)
		if pages > 0 {
			it = it.Start(cursor)
		}
		iter := it.Run(ctx)
		n := 0
		for {
			k, err := iter.Next(nil)
			if err == datastore.Done {
				break
			}
			if err != nil {
				t.Fatalf("page %d: %v", pages, err)
			}
			all = append(all, k.StringID())
			n++
		}
		c, err := iter.Cursor()
		if err != nil {
			t.Fatalf("Cursor: %v", err)
		}
		// The cursor survives its string form, and writes in between.
		cursor, err = datastore.DecodeCursor(c.String())
		if err != nil {
			t.Fatalf("DecodeCursor: %v", err)
		}
		if pages == 1 {
			if _, err := datastore.Put(ctx, datastore.NewKey(ctx, "Cur", "k00", 0, nil), &E{4}); err != nil {
				t.Fatal(err)
			}
		}
		pages++
		if n < 7 {
			break
		}
	}
	want := []string{"k04", "k09", "k14", "k19", "k24", "k03", "k08", "k13", "k18", "k23",
		"k02", "k07", "k12", "k17", "k22", "k01", "k06", "k11", "k16", "k21", "k05", "k10", "k15", "k20"}
	// k00 (I=0) moved to I=4 behind the cursor: it is not seen again.
	if strings.Join(all, ",") != strings.Join(want, ",") {
		t.Errorf("paged with cursors:\n got %v\nwant %v", all, want)
	}

	// A cursor in the middle of a batch, and an end cursor.
	iter := datastore.NewQuery("Cur").Filter("I =", 1).Run(ctx)
	iter.Next(nil)
	iter.Next(nil)
	mid, err := iter.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	rest, err := datastore.NewQuery("Cur").Filter("I =", 1).Start(mid).KeysOnly().GetAll(ctx, nil)
	if err != nil || len(rest) != 3 || rest[0].StringID() != "k11" {
		t.Errorf("from a mid-batch cursor: %v, %v", rest, err)
	}
	head, err := datastore.NewQuery("Cur").Filter("I =", 1).End(mid).KeysOnly().GetAll(ctx, nil)
	if err != nil || len(head) != 2 || head[1].StringID() != "k06" {
		t.Errorf("to an end cursor: %v, %v", head, err)
	}
	// A cursor of another query shape is refused.
	_, err = datastore.NewQuery("Cur").Order("I").Start(mid).KeysOnly().GetAll(ctx, nil)
	if !isBadRequest(err) {
		t.Errorf("a cursor used with another sort order: %v; want BAD_REQUEST", err)
	}
}

func dsNamespaces(t *testing.T, ctx context.Context) {
	type E struct{ V string }
	ns1, err := appengine.Namespace(ctx, "ns1")
	if err != nil {
		t.Fatal(err)
	}
	ns2, _ := appengine.Namespace(ctx, "ns2")
	k1 := datastore.NewKey(ns1, "NS", "same", 0, nil)
	k2 := datastore.NewKey(ns2, "NS", "same", 0, nil)
	k0 := datastore.NewKey(ctx, "NS", "same", 0, nil)
	if _, err := datastore.PutMulti(ctx, []*datastore.Key{k0, k1, k2}, []E{{"default"}, {"one"}, {"two"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ctx  context.Context
		key  *datastore.Key
		want string
	}{{ctx, k0, "default"}, {ns1, k1, "one"}, {ns2, k2, "two"}} {
		var e E
		if err := datastore.Get(c.ctx, c.key, &e); err != nil || e.V != c.want {
			t.Errorf("Get %v = %+v, %v", c.key, e, err)
		}
		var got []E
		if _, err := datastore.NewQuery("NS").GetAll(c.ctx, &got); err != nil || len(got) != 1 || got[0].V != c.want {
			t.Errorf("query in namespace %q: %+v, %v", c.key.Namespace(), got, err)
		}
	}
}

// Namespaces and Kinds (metadata queries); runs after dsNamespaces.
func dsMetadata(t *testing.T, ctx context.Context) {
	names, err := datastore.Namespaces(ctx)
	if err != nil {
		t.Fatalf("Namespaces: %v", err)
	}
	if strings.Join(names, ",") != ",ns1,ns2" {
		t.Errorf("Namespaces = %q; want the default, ns1 and ns2", names)
	}
	ns1, _ := appengine.Namespace(ctx, "ns1")
	kinds, err := datastore.Kinds(ns1)
	if err != nil || strings.Join(kinds, ",") != "NS" {
		t.Errorf("Kinds in ns1 = %q, %v", kinds, err)
	}
	kinds, err = datastore.Kinds(ctx)
	if err != nil || len(kinds) < 10 || !sort.StringsAreSorted(kinds) {
		t.Errorf("Kinds in the default namespace = %q, %v", kinds, err)
	}
	if _, err := datastore.KindProperties(ctx, "NS"); !isBadRequest(err) {
		t.Errorf("KindProperties: %v; want BAD_REQUEST (__property__ is not supported)", err)
	}
}

type counter struct{ N int }

func dsTxnCommitRollback(t *testing.T, ctx context.Context) {
	k := datastore.NewKey(ctx, "TC", "c", 0, nil)
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		var c counter
		if err := datastore.Get(tc, k, &c); err != datastore.ErrNoSuchEntity {
			return fmt.Errorf("Get in txn = %v", err)
		}
		c.N = 1
		_, err := datastore.Put(tc, k, &c)
		return err
	}, nil)
	if err != nil {
		t.Fatalf("RunInTransaction: %v", err)
	}
	var c counter
	if err := datastore.Get(ctx, k, &c); err != nil || c.N != 1 {
		t.Fatalf("after commit: %+v, %v", c, err)
	}
	// f fails: nothing applied, including a Put with an incomplete key and
	// a Delete.
	boom := errors.New("boom")
	err = datastore.RunInTransaction(ctx, func(tc context.Context) error {
		if _, err := datastore.Put(tc, k, &counter{99}); err != nil {
			return err
		}
		nk, err := datastore.Put(tc, datastore.NewIncompleteKey(tc, "TC", k), &counter{5})
		if err != nil || nk.Incomplete() {
			return fmt.Errorf("incomplete key in txn: %v, %v", nk, err)
		}
		if err := datastore.Delete(tc, k); err != nil {
			return err
		}
		return boom
	}, nil)
	if err != boom {
		t.Fatalf("RunInTransaction = %v; want f's error", err)
	}
	if err := datastore.Get(ctx, k, &c); err != nil || c.N != 1 {
		t.Errorf("after rollback: %+v, %v", c, err)
	}
	if n, _ := datastore.NewQuery("TC").Count(ctx); n != 1 {
		t.Errorf("after rollback, %d entities; want 1", n)
	}
	// Deletes and ancestor queries in a transaction.
	err = datastore.RunInTransaction(ctx, func(tc context.Context) error {
		keys, err := datastore.NewQuery("TC").Ancestor(k).KeysOnly().GetAll(tc, nil)
		if err != nil || len(keys) != 1 {
			return fmt.Errorf("ancestor query in txn: %v, %v", keys, err)
		}
		return datastore.Delete(tc, k)
	}, nil)
	if err != nil {
		t.Fatalf("delete in txn: %v", err)
	}
	if err := datastore.Get(ctx, k, &c); err != datastore.ErrNoSuchEntity {
		t.Errorf("after a transactional delete: %v", err)
	}
	// A non-ancestor query in a transaction is refused.
	err = datastore.RunInTransaction(ctx, func(tc context.Context) error {
		_, err := datastore.NewQuery("TC").KeysOnly().GetAll(tc, nil)
		return err
	}, nil)
	if !isBadRequest(err) {
		t.Errorf("global query in txn: %v; want BAD_REQUEST", err)
	}
}

func dsTxnConflict(t *testing.T, ctx context.Context) {
	k := datastore.NewKey(ctx, "TX", "conflict", 0, nil)
	if _, err := datastore.Put(ctx, k, &counter{1}); err != nil {
		t.Fatal(err)
	}
	// A write outside the transaction, to the group it read, after it read.
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		var c counter
		if err := datastore.Get(tc, k, &c); err != nil {
			return err
		}
		if _, err := datastore.Put(ctx, k, &counter{100}); err != nil {
			return err
		}
		c.N++
		_, err := datastore.Put(tc, k, &c)
		return err
	}, &datastore.TransactionOptions{Attempts: 1})
	if err != datastore.ErrConcurrentTransaction {
		t.Fatalf("RunInTransaction = %v; want ErrConcurrentTransaction", err)
	}
	var c counter
	if err := datastore.Get(ctx, k, &c); err != nil || c.N != 100 {
		t.Errorf("after the conflict: %+v, %v; want the outside write", c, err)
	}
	// A write to another entity of the same group conflicts too.
	child := datastore.NewKey(ctx, "TXChild", "x", 0, k)
	err = datastore.RunInTransaction(ctx, func(tc context.Context) error {
		var c counter
		if err := datastore.Get(tc, k, &c); err != nil {
			return err
		}
		if _, err := datastore.Put(ctx, child, &counter{}); err != nil {
			return err
		}
		_, err := datastore.Put(tc, k, &c)
		return err
	}, &datastore.TransactionOptions{Attempts: 1})
	if err != datastore.ErrConcurrentTransaction {
		t.Errorf("write to the group's child: %v; want ErrConcurrentTransaction", err)
	}
}

// Many goroutines increment one counter in transactions: every increment
// must land exactly once, with the library retrying on conflicts.
func dsTxnConcurrent(t *testing.T, ctx context.Context) {
	k := datastore.NewKey(ctx, "TX", "concurrent", 0, nil)
	if _, err := datastore.Put(ctx, k, &counter{}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts, done := 0, 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for {
					err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
						var c counter
						if err := datastore.Get(tc, k, &c); err != nil {
							return err
						}
						time.Sleep(time.Millisecond) // widen the window
						c.N++
						_, err := datastore.Put(tc, k, &c)
						return err
					}, &datastore.TransactionOptions{Attempts: 1})
					mu.Lock()
					if err == datastore.ErrConcurrentTransaction {
						conflicts++
						mu.Unlock()
						continue
					}
					if err == nil {
						done++
					} else {
						t.Errorf("increment: %v", err)
					}
					mu.Unlock()
					break
				}
			}
		}()
	}
	wg.Wait()
	var c counter
	if err := datastore.Get(ctx, k, &c); err != nil || c.N != done || done != workers*each {
		t.Errorf("counter = %d (%v) after %d committed increments; want %d", c.N, err, done, workers*each)
	}
	if conflicts == 0 {
		t.Logf("no conflicts happened (timing); the counter is still exact")
	}
}

func dsTxnSnapshot(t *testing.T, ctx context.Context) {
	k1 := datastore.NewKey(ctx, "TS", "one", 0, nil)
	k2 := datastore.NewKey(ctx, "TS", "two", 0, nil)
	if _, err := datastore.PutMulti(ctx, []*datastore.Key{k1, k2}, []counter{{1}, {1}}); err != nil {
		t.Fatal(err)
	}
	var first, second counter
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		if err := datastore.Get(tc, k1, &first); err != nil {
			return err
		}
		// Both change outside; the transaction keeps seeing its snapshot.
		if _, err := datastore.PutMulti(ctx, []*datastore.Key{k1, k2}, []counter{{2}, {2}}); err != nil {
			return err
		}
		if err := datastore.Get(tc, k2, &second); err != nil {
			return err
		}
		if err := datastore.Get(tc, k1, &first); err != nil {
			return err
		}
		// Its own writes are not visible to its reads, as in App Engine.
		if _, err := datastore.Put(tc, k1, &counter{50}); err != nil {
			return err
		}
		var again counter
		if err := datastore.Get(tc, k1, &again); err != nil || again.N != 1 {
			return fmt.Errorf("read after own write = %+v, %v; want the snapshot's 1", again, err)
		}
		return nil
	}, &datastore.TransactionOptions{XG: true, Attempts: 1})
	if first.N != 1 || second.N != 1 {
		t.Errorf("reads in the transaction saw %d and %d; want the snapshot (1, 1)", first.N, second.N)
	}
	if err != datastore.ErrConcurrentTransaction {
		t.Errorf("commit after outside writes: %v; want ErrConcurrentTransaction", err)
	}
	// Read-only transactions read, and cannot write.
	err = datastore.RunInTransaction(ctx, func(tc context.Context) error {
		var c counter
		if err := datastore.Get(tc, k1, &c); err != nil || c.N != 2 {
			return fmt.Errorf("read-only Get = %+v, %v", c, err)
		}
		_, err := datastore.Put(tc, k1, &c)
		if !isBadRequest(err) {
			return fmt.Errorf("Put in a read-only transaction = %v; want BAD_REQUEST", err)
		}
		return nil
	}, &datastore.TransactionOptions{ReadOnly: true})
	if err != nil {
		t.Error(err)
	}
}

func dsTxnCrossGroup(t *testing.T, ctx context.Context) {
	a := datastore.NewKey(ctx, "XG", "a", 0, nil)
	b := datastore.NewKey(ctx, "XG", "b", 0, nil)
	move := func(tc context.Context) error {
		var ca, cb counter
		if err := datastore.Get(tc, a, &ca); err != nil && err != datastore.ErrNoSuchEntity {
			return err
		}
		if err := datastore.Get(tc, b, &cb); err != nil && err != datastore.ErrNoSuchEntity {
			return err
		}
		ca.N--
		cb.N++
		_, err := datastore.PutMulti(tc, []*datastore.Key{a, b}, []counter{ca, cb})
		return err
	}
	// Two groups without XG: refused.
	if err := datastore.RunInTransaction(ctx, move, nil); !isBadRequest(err) {
		t.Errorf("two groups without XG: %v; want BAD_REQUEST", err)
	}
	if err := datastore.RunInTransaction(ctx, move, &datastore.TransactionOptions{XG: true}); err != nil {
		t.Fatalf("XG transaction: %v", err)
	}
	var ca, cb counter
	datastore.Get(ctx, a, &ca)
	datastore.Get(ctx, b, &cb)
	if ca.N != -1 || cb.N != 1 {
		t.Errorf("after XG commit: a=%d b=%d", ca.N, cb.N)
	}
	// Up to 25 groups, not 26.
	many := func(n int) func(tc context.Context) error {
		return func(tc context.Context) error {
			keys := make([]*datastore.Key, n)
			for i := range keys {
				keys[i] = datastore.NewKey(tc, "XGMany", "", int64(i+1), nil)
			}
			_, err := datastore.PutMulti(tc, keys, make([]counter, n))
			return err
		}
	}
	if err := datastore.RunInTransaction(ctx, many(25), &datastore.TransactionOptions{XG: true}); err != nil {
		t.Errorf("25 groups: %v", err)
	}
	if err := datastore.RunInTransaction(ctx, many(26), &datastore.TransactionOptions{XG: true}); !isBadRequest(err) {
		t.Errorf("26 groups: %v; want BAD_REQUEST", err)
	}
	// A conflict on one group fails the whole commit.
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		if err := move(tc); err != nil {
			return err
		}
		_, err := datastore.Put(ctx, b, &counter{1000})
		return err
	}, &datastore.TransactionOptions{XG: true, Attempts: 1})
	if err != datastore.ErrConcurrentTransaction {
		t.Errorf("XG conflict: %v", err)
	}
	datastore.Get(ctx, a, &ca)
	if ca.N != -1 {
		t.Errorf("a conflicting XG commit changed a: %d", ca.N)
	}
}

// RunInTransaction retries after a conflict and then succeeds.
func dsTxnRetry(t *testing.T, ctx context.Context) {
	k := datastore.NewKey(ctx, "TR", "r", 0, nil)
	attempts := 0
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		attempts++
		var c counter
		if err := datastore.Get(tc, k, &c); err != nil && err != datastore.ErrNoSuchEntity {
			return err
		}
		if attempts == 1 {
			if _, err := datastore.Put(ctx, k, &counter{10}); err != nil {
				return err
			}
		}
		c.N++
		_, err := datastore.Put(tc, k, &c)
		return err
	}, nil)
	var c counter
	datastore.Get(ctx, k, &c)
	if err != nil || attempts != 2 || c.N != 11 {
		t.Errorf("retry: err %v, %d attempts, N=%d; want nil, 2, 11", err, attempts, c.N)
	}
}
