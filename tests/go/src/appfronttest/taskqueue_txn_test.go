package appfronttest

// Transactional task adds through the official Go library: taskqueue.Add
// and AddMulti with the context of datastore.RunInTransaction. The task
// exists only once the transaction has committed: not while it runs, not
// when the function fails (rollback), not for an attempt whose commit lost
// (the library retries it). Observed with QueueStats and Delete, whose
// UNKNOWN_TASK says a name was never a task. Tasks are due in an hour, so
// none runs during the test.

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine/datastore"
	"google.golang.org/appengine/taskqueue"
)

func purgeDefault(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := taskqueue.Purge(ctx, ""); err != nil {
		t.Fatalf("Purge: %v", err)
	}
}

func txnTask() *taskqueue.Task {
	return &taskqueue.Task{Path: "/txn", Delay: time.Hour}
}

func wantUnknownTask(t *testing.T, ctx context.Context, task *taskqueue.Task) {
	t.Helper()
	if err := taskqueue.Delete(ctx, task, ""); err == nil ||
		!strings.Contains(err.Error(), "UNKNOWN_TASK") {
		t.Errorf("Delete of %q: %v; want UNKNOWN_TASK (it should never have existed)",
			task.Name, err)
	}
}

func taskqueueTxnCommit(t *testing.T, ctx context.Context) {
	purgeDefault(t, ctx)
	k := datastore.NewKey(ctx, "TQTxn", "commit-"+uniqueSuffix(), 0, nil)
	var added []*taskqueue.Task
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		if _, err := datastore.Put(tc, k, &counter{1}); err != nil {
			return err
		}
		one, err := taskqueue.Add(tc, txnTask(), "")
		if err != nil {
			return fmt.Errorf("Add in txn: %v", err)
		}
		more, err := taskqueue.AddMulti(tc, []*taskqueue.Task{txnTask(), txnTask()}, "")
		if err != nil {
			return fmt.Errorf("AddMulti in txn: %v", err)
		}
		added = append(append(added, one), more...)
		// Not a task before the commit.
		if st := queueStats(t, ctx); st.Tasks != 0 {
			return fmt.Errorf("before the commit, %d tasks; want 0", st.Tasks)
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("RunInTransaction: %v", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 3 {
		t.Fatalf("after the commit, %d tasks; want 3", st.Tasks)
	}
	// Each exists under the name Add returned.
	for _, task := range added {
		if task.Name == "" {
			t.Fatalf("Add in txn returned no name: %+v", task)
		}
		if err := taskqueue.Delete(ctx, task, ""); err != nil {
			t.Errorf("Delete of %q: %v", task.Name, err)
		}
	}
	var c counter
	if err := datastore.Get(ctx, k, &c); err != nil || c.N != 1 {
		t.Errorf("the entity of the transaction: %+v, %v", c, err)
	}
}

func taskqueueTxnRollback(t *testing.T, ctx context.Context) {
	purgeDefault(t, ctx)
	k := datastore.NewKey(ctx, "TQTxn", "rollback-"+uniqueSuffix(), 0, nil)
	boom := errors.New("boom")
	var added *taskqueue.Task
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		if _, err := datastore.Put(tc, k, &counter{1}); err != nil {
			return err
		}
		task, err := taskqueue.Add(tc, txnTask(), "")
		if err != nil {
			return fmt.Errorf("Add in txn: %v", err)
		}
		added = task
		return boom
	}, nil)
	if err != boom {
		t.Fatalf("RunInTransaction = %v; want f's error", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 0 {
		t.Errorf("after a rollback, %d tasks; want 0", st.Tasks)
	}
	wantUnknownTask(t, ctx, added)
	if err := datastore.Get(ctx, k, &counter{}); err != datastore.ErrNoSuchEntity {
		t.Errorf("the entity of a rolled back transaction: %v", err)
	}
}

// The first attempt's commit loses to a write outside the transaction; the
// library runs the function again. Only the second attempt's task exists.
func taskqueueTxnLostCommit(t *testing.T, ctx context.Context) {
	purgeDefault(t, ctx)
	k := datastore.NewKey(ctx, "TQTxn", "retry-"+uniqueSuffix(), 0, nil)
	if _, err := datastore.Put(ctx, k, &counter{0}); err != nil {
		t.Fatal(err)
	}
	var added []*taskqueue.Task
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		var c counter
		if err := datastore.Get(tc, k, &c); err != nil {
			return err
		}
		if len(added) == 0 {
			if _, err := datastore.Put(ctx, k, &counter{100}); err != nil {
				return err
			}
		}
		c.N++
		if _, err := datastore.Put(tc, k, &c); err != nil {
			return err
		}
		task, err := taskqueue.Add(tc, txnTask(), "")
		if err != nil {
			return fmt.Errorf("Add in txn: %v", err)
		}
		added = append(added, task)
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("RunInTransaction: %v", err)
	}
	if len(added) != 2 {
		t.Fatalf("the function ran %d times; want 2 (one lost commit, one retry)", len(added))
	}
	if st := queueStats(t, ctx); st.Tasks != 1 {
		t.Errorf("%d tasks; want 1, from the attempt that committed", st.Tasks)
	}
	wantUnknownTask(t, ctx, added[0])
	if err := taskqueue.Delete(ctx, added[1], ""); err != nil {
		t.Errorf("Delete of the committed task %q: %v", added[1].Name, err)
	}
}

// A transactional task cannot be named; a transaction adds at most 5 (the
// sixth is production's DATASTORE_ERROR + BAD_REQUEST, 10001), and a
// refused add does not spoil the transaction.
func taskqueueTxnLimits(t *testing.T, ctx context.Context) {
	purgeDefault(t, ctx)
	err := datastore.RunInTransaction(ctx, func(tc context.Context) error {
		named := &taskqueue.Task{Path: "/n", Name: "txn-named-" + uniqueSuffix(), Delay: time.Hour}
		if _, err := taskqueue.Add(tc, named, ""); err == nil ||
			!strings.Contains(err.Error(), "INVALID_TASK_NAME") {
			return fmt.Errorf("named task in txn: %v; want INVALID_TASK_NAME", err)
		}
		for i := 0; i < 5; i++ {
			if _, err := taskqueue.Add(tc, txnTask(), ""); err != nil {
				return fmt.Errorf("task %d in txn: %v", i+1, err)
			}
		}
		if _, err := taskqueue.Add(tc, txnTask(), ""); err == nil ||
			!strings.Contains(err.Error(), "API error 10001") {
			return fmt.Errorf("sixth task in txn: %v; want API error 10001", err)
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("RunInTransaction: %v", err)
	}
	if st := queueStats(t, ctx); st.Tasks != 5 {
		t.Errorf("%d tasks; want 5", st.Tasks)
	}
	purgeDefault(t, ctx)
}
