package appfronttest

// The API server's protocol as the official library sees it: RPC errors
// come back as the library's CallError, and many goroutines calling at once
// over the library's pooled keep-alive HTTP connections lose nothing.

import (
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/memcache"
)

func TestAPIUnknownServiceIsCallNotFound(t *testing.T) {
	ctx := newContext(t)
	err := appengine.APICall(ctx, "nosuchservice", "Get", &voidMsg{}, &voidMsg{})
	// CallError.Error() renders RpcError code 1 (CALL_NOT_FOUND) this way.
	if err == nil || !strings.HasPrefix(err.Error(), "Call error 1: ") ||
		!strings.Contains(err.Error(), "nosuchservice") {
		t.Fatalf("APICall(nosuchservice) = %v, want Call error 1 naming the service", err)
	}
	err = appengine.APICall(ctx, "memcache", "NoSuchMethod", &voidMsg{}, &voidMsg{})
	if err == nil || !strings.HasPrefix(err.Error(), "Call error 1: ") {
		t.Fatalf("APICall(memcache.NoSuchMethod) = %v, want Call error 1", err)
	}
}

func TestAPICallWithDeadline(t *testing.T) {
	// The library turns the context's deadline into
	// X-Google-RPC-Service-Deadline (seconds as a float).
	ctx, cancel := context.WithTimeout(newContext(t), 10*time.Second)
	defer cancel()
	if _, err := memcache.Get(ctx, "absent"); err != memcache.ErrCacheMiss {
		t.Fatalf("memcache.Get with a deadline = %v, want ErrCacheMiss", err)
	}
}

func TestAPIConcurrentCalls(t *testing.T) {
	ctx := newContext(t)
	const goroutines, each = 50, 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]bool{}
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v, err := memcache.Increment(ctx, "counter", 1, 0)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("memcache.Increment: %v", err)
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct counter values, want %d: increments were lost or doubled",
			len(seen), goroutines*each)
	}
	v, err := memcache.Increment(ctx, "counter", 0, 0)
	if err != nil || v != goroutines*each {
		t.Errorf("final counter = %d, %v; want %d", v, err, goroutines*each)
	}
}
