package appfronttest

import (
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/aetest"
)

// newContext starts an appfront through aetest and returns a context whose
// API calls go to it; appfront is stopped (GET /quit) when the test ends.
func newContext(t *testing.T) context.Context {
	t.Helper()
	ctx, done, err := aetest.NewContext()
	if err != nil {
		t.Fatalf("aetest.NewContext: %v (run through tests/go/run.sh, which points "+
			"APPENGINE_DEV_APPSERVER_BINARY at build/appfront)", err)
	}
	t.Cleanup(done)
	return ctx
}

// voidMsg is an empty protobuf message (base.VoidProto on the wire), for
// raw calls through appengine.APICall; the library's own message types are
// in internal packages that cannot be imported from here.
type voidMsg struct {
	XXX_unrecognized []byte `json:"-"`
}

func (m *voidMsg) Reset()         { *m = voidMsg{} }
func (m *voidMsg) String() string { return "voidMsg{}" }
func (*voidMsg) ProtoMessage()    {}

// testCase is one subtest of runCases: it gets a context whose API calls go
// to the shared server.
type testCase struct {
	name string
	fn   func(t *testing.T, ctx context.Context)
}

// runCases starts one appfront for all cases (one per case would dominate
// the run time) and runs each as a subtest, in order.
func runCases(t *testing.T, cases []testCase) {
	t.Helper()
	runCasesWith(t, aetest.Options{}, cases)
}

// runCasesWith is runCases with aetest's options (StronglyConsistentDatastore
// passes --datastore_consistency_policy=consistent, as with dev_appserver).
func runCasesWith(t *testing.T, opts aetest.Options, cases []testCase) {
	t.Helper()
	opts.SuppressDevAppServerLog = true
	opts.StartupTimeout = 60 * time.Second
	inst, err := aetest.NewInstance(&opts)
	if err != nil {
		t.Fatalf("starting the development server: %v", err)
	}
	defer inst.Close()
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			req, err := inst.NewRequest("GET", "/", nil)
			if err != nil {
				t.Fatalf("NewRequest: %v", err)
			}
			c.fn(t, appengine.NewContext(req))
		})
	}
}
