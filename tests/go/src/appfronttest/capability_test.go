package appfronttest

// "capability_service" through the official Go library. The library only
// asks the server about datastore_v3 writes; everything else it answers
// itself, which is checked too so a library change would show.

import (
	"testing"

	"google.golang.org/appengine/capability"
)

func TestCapabilityEnabled(t *testing.T) {
	ctx := newContext(t)

	cases := []struct{ api, capability string }{
		{"datastore_v3", "write"}, // the one that makes an RPC
		{"datastore_v3", "*"},
		{"memcache", "*"},
		{"mail", "*"},
	}
	for _, c := range cases {
		if !capability.Enabled(ctx, c.api, c.capability) {
			t.Errorf("capability.Enabled(%q, %q) = false, want true", c.api, c.capability)
		}
	}
}
