package appfronttest

// "app_identity_service" through the official Go library, plus the
// GetDefaultVersionHostname call the Go library does not make (it reads a
// header instead), sent with appengine.APICall.

import (
	"strings"
	"testing"
	"time"

	"github.com/golang/protobuf/proto"
	"google.golang.org/appengine"
)

// Hand-written messages with the field numbers of app_identity_service.proto:
// the generated ones live in an internal package.
type aidHostnameRequest struct{}

func (m *aidHostnameRequest) Reset()         { *m = aidHostnameRequest{} }
func (m *aidHostnameRequest) String() string { return proto.CompactTextString(m) }
func (*aidHostnameRequest) ProtoMessage()    {}

type aidHostnameResponse struct {
	Hostname *string `protobuf:"bytes,1,opt,name=hostname"`
}

func (m *aidHostnameResponse) Reset()         { *m = aidHostnameResponse{} }
func (m *aidHostnameResponse) String() string { return proto.CompactTextString(m) }
func (*aidHostnameResponse) ProtoMessage()    {}

func TestAppIdentityAccessToken(t *testing.T) {
	ctx := newContext(t)

	before := time.Now()
	tok, exp, err := appengine.AccessToken(ctx, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		t.Fatalf("AccessToken: %v", err)
	}
	if tok == "" {
		t.Error("AccessToken returned an empty token")
	}
	if exp.Before(before.Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("token expires at %v, want about an hour from %v", exp, before)
	}

	if _, _, err := appengine.AccessToken(ctx); err == nil ||
		!strings.Contains(err.Error(), "UNKNOWN_SCOPE") {
		t.Errorf("AccessToken without scopes: err = %v, want UNKNOWN_SCOPE", err)
	}
}

func TestAppIdentityServiceAccount(t *testing.T) {
	ctx := newContext(t)

	acct, err := appengine.ServiceAccount(ctx)
	if err != nil {
		t.Fatalf("ServiceAccount: %v", err)
	}
	if acct != "testapp@appspot.gserviceaccount.com" {
		t.Errorf("ServiceAccount = %q, want testapp@appspot.gserviceaccount.com", acct)
	}
}

func TestAppIdentitySigningNotImplemented(t *testing.T) {
	ctx := newContext(t)

	if _, _, err := appengine.SignBytes(ctx, []byte("hello")); err == nil ||
		!strings.Contains(err.Error(), "NOT_IMPLEMENTED") {
		t.Errorf("SignBytes: err = %v, want NOT_IMPLEMENTED", err)
	}
	if _, err := appengine.PublicCertificates(ctx); err == nil ||
		!strings.Contains(err.Error(), "NOT_IMPLEMENTED") {
		t.Errorf("PublicCertificates: err = %v, want NOT_IMPLEMENTED", err)
	}
}

func TestAppIdentityDefaultVersionHostname(t *testing.T) {
	ctx := newContext(t)

	res := &aidHostnameResponse{}
	err := appengine.APICall(ctx, "app_identity_service", "GetDefaultVersionHostname",
		&aidHostnameRequest{}, res)
	if err != nil {
		t.Fatalf("GetDefaultVersionHostname: %v", err)
	}
	// aetest starts appfront with --port=0, so only the host is known.
	if res.Hostname == nil || !strings.HasPrefix(*res.Hostname, "localhost:") {
		t.Errorf("GetDefaultVersionHostname = %v, want localhost:PORT", res.Hostname)
	}
}
