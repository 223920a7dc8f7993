package appfronttest

// "logservice": lines are flushed the way the Go runtime flushes them (an
// encoded UserAppLogGroup in FlushRequest.logs; aetest contexts never flush
// on their own), then read back with the official log.Query.

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/golang/protobuf/proto"
	"google.golang.org/appengine"
	"google.golang.org/appengine/log"
)

// Hand-written messages with the field numbers of log_service.proto: the
// generated ones live in an internal package.
type logAppLine struct {
	TimestampUsec *int64  `protobuf:"varint,1,req,name=timestamp_usec"`
	Level         *int64  `protobuf:"varint,2,req,name=level"`
	Message       *string `protobuf:"bytes,3,req,name=message"`
}

func (m *logAppLine) Reset()         { *m = logAppLine{} }
func (m *logAppLine) String() string { return proto.CompactTextString(m) }
func (*logAppLine) ProtoMessage()    {}

type logAppGroup struct {
	LogLine []*logAppLine `protobuf:"bytes,2,rep,name=log_line"`
}

func (m *logAppGroup) Reset()         { *m = logAppGroup{} }
func (m *logAppGroup) String() string { return proto.CompactTextString(m) }
func (*logAppGroup) ProtoMessage()    {}

type logFlushRequest struct {
	Logs []byte `protobuf:"bytes,1,opt,name=logs"`
}

func (m *logFlushRequest) Reset()         { *m = logFlushRequest{} }
func (m *logFlushRequest) String() string { return proto.CompactTextString(m) }
func (*logFlushRequest) ProtoMessage()    {}

func TestLogFlushAndRead(t *testing.T) {
	ctx := newContext(t)

	marker := fmt.Sprintf("appfront log test %d", time.Now().UnixNano())
	now := time.Now()
	var group logAppGroup
	for i, level := range []int64{1, 3} {
		group.LogLine = append(group.LogLine, &logAppLine{
			TimestampUsec: proto.Int64(now.Add(time.Duration(i)*time.Millisecond).UnixNano() / 1e3),
			Level:         proto.Int64(level),
			Message:       proto.String(fmt.Sprintf("%s line %d", marker, i)),
		})
	}
	logs, err := proto.Marshal(&group)
	if err != nil {
		t.Fatal(err)
	}
	if err := appengine.APICall(ctx, "logservice", "Flush", &logFlushRequest{Logs: logs},
		&voidMsg{}); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	// log.Query.Run asks for the app's version id, which outside App
	// Engine comes from these variables (else a metadata-server fetch
	// panics). "1.1" is version 1, deployment 1, as appfront serves it.
	if os.Getenv("GAE_VERSION") == "" || os.Getenv("GAE_DEPLOYMENT_ID") == "" {
		t.Setenv("GAE_VERSION", "1")
		t.Setenv("GAE_DEPLOYMENT_ID", "1")
	}

	found := 0
	res := (&log.Query{AppLogs: true}).Run(ctx)
	for {
		rec, err := res.Next()
		if err == log.Done {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if rec.AppID != "testapp" || len(rec.RequestID) == 0 {
			t.Errorf("record app %q, request id %q", rec.AppID, rec.RequestID)
		}
		for i, l := range rec.AppLogs {
			if l.Message != fmt.Sprintf("%s line %d", marker, i) {
				continue
			}
			found++
			if want := []int{1, 3}[i]; l.Level != want {
				t.Errorf("line %d level %d, want %d", i, l.Level, want)
			}
			if d := l.Time.Sub(now); d < -time.Millisecond || d > 10*time.Millisecond {
				t.Errorf("line %d time %v, flushed with %v", i, l.Time, now)
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the 2 flushed lines in log.Query results", found)
	}

	// ApplyMinLevel above both lines' levels finds nothing of ours.
	res = (&log.Query{AppLogs: true, ApplyMinLevel: true, MinLevel: 4}).Run(ctx)
	if rec, err := res.Next(); err != log.Done {
		t.Errorf("MinLevel 4: Next = %v, %v; want log.Done", rec, err)
	}
}
