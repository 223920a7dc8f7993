package appfronttest

// "app_identity_service" through the official Go library, plus the
// GetDefaultVersionHostname call the Go library does not make (it reads a
// header instead), sent with appengine.APICall.

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
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

// SignBytes signs with the app's key; the certificate PublicCertificates
// lists under the same key name verifies it as production's would:
// RSASSA-PKCS1-v1_5 over SHA-256.
func TestAppIdentitySignBytes(t *testing.T) {
	ctx := newContext(t)

	data := []byte("a token to sign")
	keyName, sig, err := appengine.SignBytes(ctx, data)
	if err != nil {
		t.Fatalf("SignBytes: %v", err)
	}
	certs, err := appengine.PublicCertificates(ctx)
	if err != nil {
		t.Fatalf("PublicCertificates: %v", err)
	}
	var pemData []byte
	for _, c := range certs {
		if c.KeyName == keyName {
			pemData = c.Data
		}
	}
	if pemData == nil {
		t.Fatalf("no certificate named %q among %d", keyName, len(certs))
	}
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("certificate is not PEM: %q", pemData)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want RSA", cert.PublicKey)
	}
	digest := sha256.Sum256(data)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	other := sha256.Sum256([]byte("other bytes"))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, other[:], sig) == nil {
		t.Errorf("signature verifies for other bytes")
	}
	// The same key signs again.
	if again, _, err := appengine.SignBytes(ctx, data); err != nil || again != keyName {
		t.Errorf("second SignBytes: key %q, %v; want %q", again, err, keyName)
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
