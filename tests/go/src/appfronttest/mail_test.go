package appfronttest

// "mail" through the official Go library: good messages are accepted (and
// not delivered), bad ones refused with the official error codes.

import (
	"strings"
	"testing"

	"google.golang.org/appengine/mail"
)

func mailGood() *mail.Message {
	return &mail.Message{
		Sender:  "romeo@montague.com",
		To:      []string{"Juliet <juliet@capulet.org>"},
		Subject: "See you tonight",
		Body:    "Don't forget our plans. Hark, 'til later.",
	}
}

func TestMailSend(t *testing.T) {
	ctx := newContext(t)

	if err := mail.Send(ctx, mailGood()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := mailGood()
	m.Attachments = []mail.Attachment{{Name: "notes.txt", Data: []byte("hi")}}
	m.Headers = map[string][]string{"List-Id": {"<list.example.com>"}}
	if err := mail.Send(ctx, m); err != nil {
		t.Fatalf("Send with an attachment and a List-Id header: %v", err)
	}
	admins := mailGood()
	admins.To = nil
	if err := mail.SendToAdmins(ctx, admins); err != nil {
		t.Fatalf("SendToAdmins: %v", err)
	}
}

func TestMailRefused(t *testing.T) {
	ctx := newContext(t)

	cases := []struct {
		name   string
		change func(*mail.Message)
		want   string
	}{
		{"bad sender", func(m *mail.Message) { m.Sender = "not an address" }, "BAD_REQUEST"},
		{"bad recipient", func(m *mail.Message) { m.Cc = []string{"juliet@"} }, "BAD_REQUEST"},
		{"no recipients", func(m *mail.Message) { m.To = nil }, "BAD_REQUEST"},
		{"no body", func(m *mail.Message) { m.Body = "" }, "BAD_REQUEST"},
		{"executable attachment", func(m *mail.Message) {
			m.Attachments = []mail.Attachment{{Name: "run.exe", Data: []byte("MZ")}}
		}, "INVALID_ATTACHMENT_TYPE"},
		{"forbidden header", func(m *mail.Message) {
			m.Headers = map[string][]string{"Bcc": {"spy@example.com"}}
		}, "INVALID_HEADER_NAME"},
	}
	for _, c := range cases {
		m := mailGood()
		c.change(m)
		err := mail.Send(ctx, m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Send err = %v, want %s", c.name, err, c.want)
		}
	}
}
