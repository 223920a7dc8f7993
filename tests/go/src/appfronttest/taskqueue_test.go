package appfronttest

// "taskqueue" through the official Go library: Add, AddMulti, Delete,
// Purge, QueueStats and the error codes the library turns into its own
// errors. aetest's app has no queue.yaml, so only the queue "default"
// exists; tasks are added with a delay so that none runs during the test.

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/taskqueue"
)

func TestTaskqueue(t *testing.T) {
	runCases(t, []testCase{
		{"add and duplicates", taskqueueAdd},
		{"add multi", taskqueueAddMulti},
		{"stats, delete and purge", taskqueueStatsDeletePurge},
		{"errors", taskqueueErrors},
		{"transactional add commits", taskqueueTxnCommit},
		{"transactional add rolled back", taskqueueTxnRollback},
		{"transactional add of a lost commit", taskqueueTxnLostCommit},
		{"transactional limits", taskqueueTxnLimits},
	})
}

// uniqueSuffix keeps task names of one run apart from those of an earlier
// run on the same storage.
func uniqueSuffix() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36)
}

func queueStats(t *testing.T, ctx context.Context) taskqueue.QueueStatistics {
	t.Helper()
	st, err := taskqueue.QueueStats(ctx, []string{"default"})
	if err != nil || len(st) != 1 {
		t.Fatalf("QueueStats: %v, %v", st, err)
	}
	return st[0]
}

func taskqueueAdd(t *testing.T, ctx context.Context) {
	task := taskqueue.NewPOSTTask("/work", url.Values{"key": {"value"}})
	task.Delay = time.Hour
	got, err := taskqueue.Add(ctx, task, "")
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if got.Name == "" || got.Method != "POST" {
		t.Fatalf("Add returned %+v: want a chosen name and POST", got)
	}
	named := &taskqueue.Task{Path: "/work", Name: "go-named-" + uniqueSuffix(), Delay: time.Hour}
	if _, err := taskqueue.Add(ctx, named, "default"); err != nil {
		t.Fatalf("Add named: %v", err)
	}
	if _, err := taskqueue.Add(ctx, named, "default"); err != taskqueue.ErrTaskAlreadyAdded {
		t.Fatalf("second Add of the same name: %v, want ErrTaskAlreadyAdded", err)
	}
	if err := taskqueue.Delete(ctx, named, "default"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// A deleted name is a tombstone: still "already added".
	if _, err := taskqueue.Add(ctx, named, "default"); err != taskqueue.ErrTaskAlreadyAdded {
		t.Fatalf("Add after Delete: %v, want ErrTaskAlreadyAdded", err)
	}
}

func taskqueueAddMulti(t *testing.T, ctx context.Context) {
	sfx := uniqueSuffix()
	tasks := []*taskqueue.Task{
		{Path: "/a", Name: "go-multi-1-" + sfx, Delay: time.Hour},
		{Path: "/b", Delay: time.Hour, Method: "PUT", Payload: []byte("x")},
	}
	got, err := taskqueue.AddMulti(ctx, tasks, "")
	if err != nil {
		t.Fatalf("AddMulti: %v", err)
	}
	if len(got) != 2 || got[0].Name != "go-multi-1-"+sfx || got[1].Name == "" {
		t.Fatalf("AddMulti returned %+v", got)
	}
	_, err = taskqueue.AddMulti(ctx, []*taskqueue.Task{
		{Path: "/a", Name: "go-multi-1-" + sfx, Delay: time.Hour},
		{Path: "/c", Name: "go-multi-2-" + sfx, Delay: time.Hour},
	}, "")
	me, ok := err.(appengine.MultiError)
	if !ok || len(me) != 2 || me[0] != taskqueue.ErrTaskAlreadyAdded || me[1] != nil {
		t.Fatalf("AddMulti with a taken name: %#v, want [ErrTaskAlreadyAdded, nil]", err)
	}
}

func taskqueueStatsDeletePurge(t *testing.T, ctx context.Context) {
	if err := taskqueue.Purge(ctx, ""); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 0 || !st.OldestETA.IsZero() {
		t.Fatalf("after Purge: %+v", st)
	}
	eta := time.Now().Add(2 * time.Hour).Truncate(time.Microsecond)
	a, err := taskqueue.Add(ctx, &taskqueue.Task{Path: "/s", ETA: eta}, "")
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, err := taskqueue.Add(ctx, &taskqueue.Task{Path: "/s", Delay: 3 * time.Hour}, ""); err != nil {
		t.Fatalf("Add: %v", err)
	}
	st := queueStats(t, ctx)
	if st.Tasks != 2 || !st.OldestETA.Equal(eta) {
		t.Fatalf("QueueStats: %+v, want 2 tasks, oldest %v", st, eta)
	}
	if err := taskqueue.Delete(ctx, a, ""); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := taskqueue.Delete(ctx, a, ""); err == nil ||
		!strings.Contains(err.Error(), "TOMBSTONED_TASK") {
		t.Fatalf("second Delete: %v, want TOMBSTONED_TASK", err)
	}
	if err := taskqueue.Delete(ctx, &taskqueue.Task{Name: "never-added"}, ""); err == nil ||
		!strings.Contains(err.Error(), "UNKNOWN_TASK") {
		t.Fatalf("Delete of an unknown task: %v, want UNKNOWN_TASK", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 1 {
		t.Fatalf("after Delete: %+v", st)
	}
	if err := taskqueue.Purge(ctx, "default"); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 0 {
		t.Fatalf("after Purge: %+v", st)
	}
}

func taskqueueErrors(t *testing.T, ctx context.Context) {
	_, err := taskqueue.Add(ctx, &taskqueue.Task{Path: "/x"}, "no-such-queue")
	if err == nil || !strings.Contains(err.Error(), "UNKNOWN_QUEUE") {
		t.Fatalf("Add to an unknown queue: %v, want UNKNOWN_QUEUE", err)
	}
	_, err = taskqueue.Add(ctx, &taskqueue.Task{Path: "/x"}, "bad_name")
	if err == nil || !strings.Contains(err.Error(), "INVALID_QUEUE_NAME") {
		t.Fatalf("Add to a malformed queue name: %v, want INVALID_QUEUE_NAME", err)
	}
	_, err = taskqueue.Add(ctx, &taskqueue.Task{Path: "/x", Name: "no spaces"}, "")
	if err == nil || !strings.Contains(err.Error(), "INVALID_TASK_NAME") {
		t.Fatalf("Add with a bad name: %v, want INVALID_TASK_NAME", err)
	}
	_, err = taskqueue.Add(ctx, &taskqueue.Task{Path: "/x", Delay: 40 * 24 * time.Hour}, "")
	if err == nil || !strings.Contains(err.Error(), "INVALID_ETA") {
		t.Fatalf("Add 40 days ahead: %v, want INVALID_ETA", err)
	}
	_, err = taskqueue.Add(ctx, &taskqueue.Task{Path: "/x", Payload: make([]byte, 200<<10)}, "")
	if err == nil || !strings.Contains(err.Error(), "TASK_TOO_LARGE") {
		t.Fatalf("Add of 200 KiB: %v, want TASK_TOO_LARGE", err)
	}
	// "default" is a push queue: pull calls are refused.
	_, err = taskqueue.Add(ctx, &taskqueue.Task{Method: "PULL", Payload: []byte("p")}, "")
	if err == nil || !strings.Contains(err.Error(), "INVALID_QUEUE_MODE") {
		t.Fatalf("pull task in a push queue: %v, want INVALID_QUEUE_MODE", err)
	}
	_, err = taskqueue.Lease(ctx, 10, "default", 60)
	if err == nil || !strings.Contains(err.Error(), "INVALID_QUEUE_MODE") {
		t.Fatalf("Lease on a push queue: %v, want INVALID_QUEUE_MODE", err)
	}
}
