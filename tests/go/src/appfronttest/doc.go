// Package appfronttest holds appfront's compatibility tests with the
// official App Engine Go library (google.golang.org/appengine), run by
// tests/go/run.sh in GOPATH mode against build/appfront.
//
// Each test gets a context from newContext (helper_test.go), which starts
// appfront through aetest exactly as a Go App Engine project's own tests do,
// and then uses only the library's public API: what passes here works for
// real Go apps.
package appfronttest
