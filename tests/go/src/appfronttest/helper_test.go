package appfronttest

import (
	"testing"

	"golang.org/x/net/context"
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
