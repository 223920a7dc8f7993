package appfronttest

// "mail" through the official Go library: good messages are accepted (and
// not delivered without --smtp_host, delivered to an SMTP server with it),
// bad ones refused with the official error codes.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// smtpSink is a small SMTP server on loopback for TestMailSMTP: it accepts
// every message (refusing recipients whose address starts with "nobody")
// and hands each, with its envelope, to msgs.
type smtpSink struct {
	ln   net.Listener
	msgs chan sinkMsg
}

type sinkMsg struct {
	from string
	rcpt []string
	data []byte
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln, msgs: make(chan sinkMsg, 8)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := textproto.NewConn(c)
	r.PrintfLine("220 sink ready")
	var m sinkMsg
	for {
		line, err := r.ReadLine()
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch {
		case verb == "EHLO":
			r.PrintfLine("250-sink\r\n250 8BITMIME")
		case strings.HasPrefix(strings.ToUpper(line), "MAIL FROM:"):
			m = sinkMsg{from: line[len("MAIL FROM:"):]}
			r.PrintfLine("250 ok")
		case strings.HasPrefix(strings.ToUpper(line), "RCPT TO:"):
			to := line[len("RCPT TO:"):]
			if strings.HasPrefix(to, "<nobody") {
				r.PrintfLine("550 5.1.1 no such mailbox")
				continue
			}
			m.rcpt = append(m.rcpt, to)
			r.PrintfLine("250 ok")
		case verb == "DATA":
			r.PrintfLine("354 go on")
			data, err := r.ReadDotBytes()
			if err != nil {
				return
			}
			m.data = data
			s.msgs <- m
			r.PrintfLine("250 queued")
		case verb == "QUIT":
			r.PrintfLine("221 bye")
			return
		default:
			r.PrintfLine("502 unknown")
		}
	}
}

// TestMailSMTP: mail.Send through appfront started by aetest with
// --smtp_host (through a wrapper of APPENGINE_DEV_APPSERVER_BINARY),
// delivered to a server on loopback; a refused recipient is an error.
func TestMailSMTP(t *testing.T) {
	bin := os.Getenv("APPENGINE_DEV_APPSERVER_BINARY")
	if bin == "" {
		t.Skip("APPENGINE_DEV_APPSERVER_BINARY is not set (run through tests/go/run.sh)")
	}
	sink := newSMTPSink(t)
	port := sink.ln.Addr().(*net.TCPAddr).Port
	wrapper := filepath.Join(t.TempDir(), "appfront-smtp")
	script := fmt.Sprintf("#!/bin/sh\nexec '%s' --smtp_host=127.0.0.1 --smtp_port=%d \"$@\"\n",
		bin, port)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APPENGINE_DEV_APPSERVER_BINARY", wrapper)
	ctx := newContext(t)

	m := mailGood()
	m.Bcc = []string{"friar@verona.example"}
	m.HTMLBody = "<p>Hark, <b>'til</b> later.</p>"
	m.Attachments = []mail.Attachment{{Name: "notes.txt", Data: []byte("hi there")}}
	if err := mail.Send(ctx, m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var got sinkMsg
	select {
	case got = <-sink.msgs:
	case <-time.After(5 * time.Second):
		t.Fatal("the SMTP server got no message")
	}
	if got.from != "<romeo@montague.com>" ||
		strings.Join(got.rcpt, ",") != "<juliet@capulet.org>,<friar@verona.example>" {
		t.Errorf("envelope from %q to %q", got.from, got.rcpt)
	}
	msg, err := netmail.ReadMessage(bytes.NewReader(got.data))
	if err != nil {
		t.Fatalf("the message does not parse: %v\n%s", err, got.data)
	}
	if msg.Header.Get("Subject") != m.Subject || msg.Header.Get("Bcc") != "" ||
		msg.Header.Get("To") != "Juliet <juliet@capulet.org>" {
		t.Errorf("headers %v", msg.Header)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	var attachment []byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, strings.SplitN(p.Header.Get("Content-Type"), ";", 2)[0])
		if p.FileName() == "notes.txt" {
			raw, _ := io.ReadAll(p)
			attachment, _ = base64.StdEncoding.DecodeString(strings.ReplaceAll(
				strings.ReplaceAll(string(raw), "\r\n", ""), "\n", ""))
		}
	}
	if strings.Join(types, ",") != "multipart/alternative,text/plain" ||
		string(attachment) != "hi there" {
		t.Errorf("parts %v, attachment %q", types, attachment)
	}

	refused := mailGood()
	refused.To = []string{"nobody@capulet.org"}
	err = mail.Send(ctx, refused)
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") ||
		!strings.Contains(err.Error(), "550 5.1.1") ||
		!strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("Send to a refused recipient: err = %v", err)
	}
}
