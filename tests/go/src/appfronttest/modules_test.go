package appfronttest

// "modules" through the official Go library: aetest's app has one module,
// "default", at version "1".

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/appengine"
	"google.golang.org/appengine/module"
)

func TestModulesList(t *testing.T) {
	ctx := newContext(t)

	mods, err := module.List(ctx)
	if err != nil || !reflect.DeepEqual(mods, []string{"default"}) {
		t.Errorf("module.List = %v, %v; want [default]", mods, err)
	}
	vers, err := module.Versions(ctx, "")
	if err != nil || !reflect.DeepEqual(vers, []string{"1"}) {
		t.Errorf("module.Versions = %v, %v; want [1]", vers, err)
	}
	def, err := module.DefaultVersion(ctx, "default")
	if err != nil || def != "1" {
		t.Errorf("module.DefaultVersion = %q, %v; want 1", def, err)
	}
	n, err := module.NumInstances(ctx, "", "")
	if err != nil || n < 0 {
		t.Errorf("module.NumInstances = %d, %v", n, err)
	}
}

func TestModulesHostname(t *testing.T) {
	ctx := newContext(t)

	host, err := appengine.ModuleHostname(ctx, "", "", "")
	if err != nil || !strings.HasPrefix(host, "localhost:") {
		t.Errorf("ModuleHostname = %q, %v; want localhost:PORT", host, err)
	}
	host2, err := appengine.ModuleHostname(ctx, "default", "1", "")
	if err != nil || host2 != host {
		t.Errorf("ModuleHostname(default, 1) = %q, %v; want %q", host2, err, host)
	}
}

func TestModulesUnknown(t *testing.T) {
	ctx := newContext(t)

	if _, err := module.Versions(ctx, "nosuchmodule"); err == nil ||
		!strings.Contains(err.Error(), "INVALID_MODULE") {
		t.Errorf("Versions(nosuchmodule): err = %v, want INVALID_MODULE", err)
	}
	if _, err := module.NumInstances(ctx, "default", "99"); err == nil ||
		!strings.Contains(err.Error(), "INVALID_VERSION") {
		t.Errorf("NumInstances(default, 99): err = %v, want INVALID_VERSION", err)
	}
	if _, err := appengine.ModuleHostname(ctx, "nosuchmodule", "", ""); err == nil ||
		!strings.Contains(err.Error(), "INVALID_MODULE") {
		t.Errorf("ModuleHostname(nosuchmodule): err = %v, want INVALID_MODULE", err)
	}
	if err := module.SetNumInstances(ctx, "", "", 3); err == nil {
		t.Error("SetNumInstances succeeded; appfront cannot change instances from the API")
	}
}
