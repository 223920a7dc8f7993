package appfronttest

// The "user" service through the official Go library: login and logout
// URLs point at appfront's own /_ah pages and carry the destination.

import (
	"net/url"
	"strings"
	"testing"

	"google.golang.org/appengine/user"
)

// userCheckURL parses an /_ah/login or /_ah/logout URL and returns its
// continue parameter.
func userCheckURL(t *testing.T, raw, page string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s URL %q does not parse: %v", page, raw, err)
	}
	if u.Scheme != "http" || u.Host == "" || u.Path != "/_ah/"+page {
		t.Fatalf("%s URL %q: want http://HOST/_ah/%s", page, raw, page)
	}
	return u.Query().Get("continue")
}

func TestUserLoginLogoutURL(t *testing.T) {
	ctx := newContext(t)

	dest := "http://example.com/back?x=1&y=2"
	login, err := user.LoginURL(ctx, dest)
	if err != nil {
		t.Fatalf("LoginURL: %v", err)
	}
	if got := userCheckURL(t, login, "login"); got != dest {
		t.Errorf("login continue = %q, want %q (URL %q)", got, dest, login)
	}

	logout, err := user.LogoutURL(ctx, "/bye")
	if err != nil {
		t.Fatalf("LogoutURL: %v", err)
	}
	u, _ := url.Parse(logout)
	want := "http://" + u.Host + "/bye"
	if got := userCheckURL(t, logout, "logout"); got != want {
		t.Errorf("logout continue = %q, want %q (URL %q)", got, want, logout)
	}
}

func TestUserLoginURLTooLong(t *testing.T) {
	ctx := newContext(t)

	_, err := user.LoginURL(ctx, "http://example.com/"+strings.Repeat("a", 5000))
	if err == nil || !strings.Contains(err.Error(), "REDIRECT_URL_TOO_LONG") {
		t.Fatalf("LoginURL with a 5000-byte destination: err = %v, want REDIRECT_URL_TOO_LONG", err)
	}
}

func TestUserOAuth(t *testing.T) {
	ctx := newContext(t)

	u, err := user.CurrentOAuth(ctx, "https://www.googleapis.com/auth/userinfo.email")
	if err != nil {
		t.Fatalf("CurrentOAuth: %v", err)
	}
	if u.Email != "example@example.com" || u.Admin {
		t.Errorf("CurrentOAuth = %+v, want the fixed non-admin example@example.com", u)
	}
	key, err := user.OAuthConsumerKey(ctx)
	if err != nil || key == "" {
		t.Errorf("OAuthConsumerKey = %q, %v", key, err)
	}
}
