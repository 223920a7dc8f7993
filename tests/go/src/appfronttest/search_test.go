package appfronttest

// The "search" service through the official library's search package:
// Put/Get/Delete of struct and FieldList documents, Search with several
// query forms, sort, offset and cursor paging, List, and the errors of a
// bad query and a bad document.

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/search"
)

type book struct {
	Title     string
	Author    search.Atom
	Body      search.HTML
	Pages     float64
	Published time.Time
	Where     appengine.GeoPoint
}

var books = map[string]book{
	"b1": {"The Red Fox", "ann", "<p>a <b>quick</b> fox jumps</p>", 120, day(2001, 5, 1), appengine.GeoPoint{Lat: 51.5, Lng: -0.1}},
	"b2": {"Blue Whales", "bob", "<p>the deep blue sea</p>", 300, day(2010, 1, 1), appengine.GeoPoint{Lat: 40, Lng: -74}},
	"b3": {"Red and Blue", "Ann", "<p>colours of the sea and the fox</p>", 80, day(2015, 7, 4), appengine.GeoPoint{Lat: 0, Lng: 0}},
	"b4": {"Green Fields", "cid", "<p>grass</p>", 210, day(2020, 2, 29), appengine.GeoPoint{Lat: -33.9, Lng: 151.2}},
}

func day(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 12, 0, 0, 0, time.UTC)
}

func putBooks(t *testing.T, ctx context.Context, idx *search.Index) {
	t.Helper()
	for id, b := range books {
		b := b
		got, err := idx.Put(ctx, id, &b)
		if err != nil || got != id {
			t.Fatalf("Put(%q) = %q, %v", id, got, err)
		}
	}
}

// ids runs a search and returns the ids in the order found, and the count.
func ids(t *testing.T, ctx context.Context, idx *search.Index, q string, opts *search.SearchOptions) ([]string, int) {
	t.Helper()
	it := idx.Search(ctx, q, opts)
	var out []string
	for {
		id, err := it.Next(nil)
		if err == search.Done {
			break
		}
		if err != nil {
			t.Fatalf("Search(%q): %v", q, err)
		}
		out = append(out, id)
	}
	return out, it.Count()
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func TestSearch(t *testing.T) {
	runCases(t, []testCase{
		{"put get delete", func(t *testing.T, ctx context.Context) {
			idx, err := search.Open("books-crud")
			if err != nil {
				t.Fatal(err)
			}
			putBooks(t, ctx, idx)
			var b book
			if err := idx.Get(ctx, "b2", &b); err != nil {
				t.Fatalf("Get: %v", err)
			}
			want := books["b2"]
			if b.Title != want.Title || b.Author != want.Author || b.Body != want.Body ||
				b.Pages != want.Pages || !b.Published.Equal(want.Published) || b.Where != want.Where {
				t.Errorf("Get = %+v, want %+v", b, want)
			}
			if err := idx.Get(ctx, "b0", &b); err != search.ErrNoSuchDocument {
				t.Errorf("Get(missing) = %v, want ErrNoSuchDocument", err)
			}
			if err := idx.Delete(ctx, "b2"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := idx.Get(ctx, "b2", &b); err != search.ErrNoSuchDocument {
				t.Errorf("Get(deleted) = %v, want ErrNoSuchDocument", err)
			}
			// Deleting again is fine, as in production.
			if err := idx.Delete(ctx, "b2"); err != nil {
				t.Errorf("Delete(missing): %v", err)
			}
			// A generated id, and a FieldList document.
			fl := search.FieldList{{Name: "Title", Value: "generated"}, {Name: "N", Value: 7.5}}
			id, err := idx.Put(ctx, "", &fl)
			if err != nil || id == "" {
				t.Fatalf("Put(no id) = %q, %v", id, err)
			}
			var got search.FieldList
			if err := idx.Get(ctx, id, &got); err != nil {
				t.Fatalf("Get(%q): %v", id, err)
			}
			// A text field comes back with its language, "en" unless set.
			fl[0].Language = "en"
			if !reflect.DeepEqual(got, fl) {
				t.Errorf("Get(%q) = %#v, want %#v", id, got, fl)
			}
			// Replacing a document replaces its words too.
			if _, err := idx.Put(ctx, id, &search.FieldList{{Name: "Title", Value: "renamed"}}); err != nil {
				t.Fatal(err)
			}
			if got, _ := ids(t, ctx, idx, "generated", nil); len(got) != 0 {
				t.Errorf("old words still match: %v", got)
			}
			if got, _ := ids(t, ctx, idx, "renamed", nil); !reflect.DeepEqual(got, []string{id}) {
				t.Errorf("new words: %v, want [%s]", got, id)
			}
		}},
		{"queries", func(t *testing.T, ctx context.Context) {
			idx, _ := search.Open("books-query")
			putBooks(t, ctx, idx)
			cases := []struct {
				q    string
				want []string
			}{
				{"", []string{"b1", "b2", "b3", "b4"}},
				{"fox", []string{"b1", "b3"}},
				{"FOX", []string{"b1", "b3"}},
				{"red blue", []string{"b3"}},
				{"red AND blue", []string{"b3"}},
				{"red OR green", []string{"b1", "b3", "b4"}},
				{"fox NOT blue", []string{"b1"}},
				{"(red OR green) AND NOT fox", []string{"b4"}},
				{`"blue sea"`, []string{"b2"}},
				{`"sea blue"`, nil},
				{"Title:blue", []string{"b2", "b3"}},
				{"Title = red", []string{"b1", "b3"}},
				{"Title:(whales OR fields)", []string{"b2", "b4"}},
				{"Body:quick", []string{"b1"}},
				{"Body:p", nil}, // tags are not words
				{"Author:ann", []string{"b1", "b3"}},
				{"Author:an", nil}, // an atom matches whole
				{"Pages < 100", []string{"b3"}},
				{"Pages >= 210", []string{"b2", "b4"}},
				{"Pages = 300", []string{"b2"}},
				{"Pages > 100 AND Pages <= 210", []string{"b1", "b4"}},
				{"Published < 2010-01-01", []string{"b1"}},
				{"Published >= 2010-01-01", []string{"b2", "b3", "b4"}},
				{"Published = 2020-02-29", []string{"b4"}},
				{"Published > 2015-07-04", []string{"b4"}},
				{"nosuchword", nil},
			}
			for _, c := range cases {
				got, n := ids(t, ctx, idx, c.q, nil)
				if !reflect.DeepEqual(sorted(got), c.want) && !(len(got) == 0 && len(c.want) == 0) {
					t.Errorf("Search(%q) = %v, want %v", c.q, sorted(got), c.want)
				}
				if n != len(c.want) {
					t.Errorf("Search(%q).Count() = %d, want %d", c.q, n, len(c.want))
				}
			}
		}},
		{"sort, fields, ids only", func(t *testing.T, ctx context.Context) {
			idx, _ := search.Open("books-sort")
			putBooks(t, ctx, idx)
			byPages := &search.SearchOptions{Sort: &search.SortOptions{
				Expressions: []search.SortExpression{{Expr: "Pages", Reverse: true}}}}
			if got, _ := ids(t, ctx, idx, "", byPages); !reflect.DeepEqual(got, []string{"b3", "b1", "b4", "b2"}) {
				t.Errorf("sorted by Pages ascending: %v", got)
			}
			byTitle := &search.SearchOptions{Sort: &search.SortOptions{
				Expressions: []search.SortExpression{{Expr: "Title"}}}}
			if got, _ := ids(t, ctx, idx, "", byTitle); !reflect.DeepEqual(got, []string{"b1", "b3", "b4", "b2"}) {
				t.Errorf("sorted by Title descending: %v", got)
			}
			it := idx.Search(ctx, "fox", &search.SearchOptions{Fields: []string{"Title"},
				Sort: byPages.Sort})
			var fl search.FieldList
			if _, err := it.Next(&fl); err != nil {
				t.Fatal(err)
			}
			if len(fl) != 1 || fl[0].Name != "Title" || fl[0].Value != "Red and Blue" {
				t.Errorf("Fields: [Title] returned %#v", fl)
			}
			it = idx.Search(ctx, "fox", &search.SearchOptions{IDsOnly: true})
			if id, err := it.Next(nil); err != nil || (id != "b1" && id != "b3") {
				t.Errorf("IDsOnly: %q, %v", id, err)
			}
		}},
		{"paging", func(t *testing.T, ctx context.Context) {
			idx, _ := search.Open("books-paging")
			var keys []string
			for i := 0; i < 25; i++ {
				id := fmt.Sprintf("d%02d", i)
				keys = append(keys, id)
				if _, err := idx.Put(ctx, id, &search.FieldList{{Name: "N", Value: float64(i)},
					{Name: "T", Value: "common"}}); err != nil {
					t.Fatal(err)
				}
			}
			asc := &search.SortOptions{Expressions: []search.SortExpression{{Expr: "N", Reverse: true}}}
			// Offset.
			got, n := ids(t, ctx, idx, "common", &search.SearchOptions{Limit: 5, Offset: 10, Sort: asc})
			if !reflect.DeepEqual(got, keys[10:15]) || n != 25 {
				t.Errorf("Offset 10 Limit 5 = %v (count %d), want %v (25)", got, n, keys[10:15])
			}
			// Cursors: page by page with the last result's cursor.
			var all []string
			var cur search.Cursor
			for page := 0; page < 10; page++ {
				it := idx.Search(ctx, "common", &search.SearchOptions{Limit: 7, Cursor: cur, Sort: asc})
				k := 0
				for {
					id, err := it.Next(nil)
					if err == search.Done {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					all = append(all, id)
					k++
				}
				if k == 0 {
					break
				}
				cur = it.Cursor()
			}
			if !reflect.DeepEqual(all, keys) {
				t.Errorf("paged with cursors: %v, want %v", all, keys)
			}
			// Without a limit the iterator fetches every page itself.
			if got, _ := ids(t, ctx, idx, "common", &search.SearchOptions{Sort: asc}); !reflect.DeepEqual(got, keys) {
				t.Errorf("unlimited: %v", got)
			}
		}},
		{"list", func(t *testing.T, ctx context.Context) {
			idx, _ := search.Open("books-list")
			putBooks(t, ctx, idx)
			var got []string
			it := idx.List(ctx, nil)
			for {
				var b book
				id, err := it.Next(&b)
				if err == search.Done {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if b.Title != books[id].Title {
					t.Errorf("List: %s has Title %q", id, b.Title)
				}
				got = append(got, id)
			}
			if !reflect.DeepEqual(got, []string{"b1", "b2", "b3", "b4"}) {
				t.Errorf("List = %v", got)
			}
			it = idx.List(ctx, &search.ListOptions{StartID: "b2", Limit: 2, IDsOnly: true})
			got = nil
			for {
				id, err := it.Next(nil)
				if err == search.Done {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, id)
			}
			if !reflect.DeepEqual(got, []string{"b2", "b3"}) {
				t.Errorf("List(StartID b2, Limit 2) = %v", got)
			}
		}},
		{"namespaces", func(t *testing.T, ctx context.Context) {
			nctx, err := appengine.Namespace(ctx, "other")
			if err != nil {
				t.Fatal(err)
			}
			idx, _ := search.Open("books-ns")
			if _, err := idx.Put(nctx, "x", &search.FieldList{{Name: "T", Value: "hidden"}}); err != nil {
				t.Fatal(err)
			}
			if got, _ := ids(t, ctx, idx, "hidden", nil); len(got) != 0 {
				t.Errorf("default namespace sees %v", got)
			}
			if got, _ := ids(t, nctx, idx, "hidden", nil); !reflect.DeepEqual(got, []string{"x"}) {
				t.Errorf("namespace other sees %v", got)
			}
		}},
		{"errors", func(t *testing.T, ctx context.Context) {
			idx, _ := search.Open("books-errors")
			putBooks(t, ctx, idx)
			for q, want := range map[string]string{
				"(fox":         "no matching ')'",
				"fox AND":      "the query ends",
				`"unclosed`:    "no closing quote",
				"Pages < heavy": "neither a number nor a date",
				"1bad:x":       "not a field name",
			} {
				_, err := idx.Search(ctx, q, nil).Next(nil)
				if err == nil || !strings.Contains(err.Error(), "INVALID_REQUEST") ||
					!strings.Contains(err.Error(), want) {
					t.Errorf("Search(%q) error = %v, want INVALID_REQUEST with %q", q, err, want)
				}
			}
			_, err := idx.Search(ctx, "fox", &search.SearchOptions{
				Expressions: []search.FieldExpression{{Name: "s", Expr: "snippet('fox', Title)"}}}).Next(nil)
			if err == nil || !strings.Contains(err.Error(), "not supported") {
				t.Errorf("expressions: %v, want a not supported error", err)
			}
			// The server checks what the library lets through.
			long := strings.Repeat("x", 600)
			_, err = idx.Put(ctx, long, &search.FieldList{{Name: "T", Value: "x"}})
			if err == nil || !strings.Contains(err.Error(), "INVALID_REQUEST") {
				t.Errorf("Put(600-byte id) = %v, want INVALID_REQUEST", err)
			}
			// The server still answers.
			if got, _ := ids(t, ctx, idx, "fox", nil); len(got) != 2 {
				t.Errorf("after errors: %v", got)
			}
		}},
	})
}
