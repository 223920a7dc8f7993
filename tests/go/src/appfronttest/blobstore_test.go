package appfronttest

// "blobstore" through the official Go library: UploadURL, an upload
// through the front end as a browser makes it, Stat of the __BlobInfo__
// the upload wrote, NewReader (FetchData, several calls for a blob larger
// than the reader's 256 KiB buffer, Seek and ReadAt), Delete, and the
// refusals. aetest's app has no handlers, so the upload's success path
// answers 404 from the app itself: that answer proves the request was
// forwarded, and the blob is found through a datastore query on
// __BlobInfo__ (ParseUpload is checked against the forwarded form by
// tests/e2e/test_blobstore.py, with this same library).

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"io"
	"io/ioutil"
	"math/rand"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/context"
	"google.golang.org/appengine"
	"google.golang.org/appengine/aetest"
	"google.golang.org/appengine/blobstore"
	"google.golang.org/appengine/datastore"
)

// The blob is found by a global query on __BlobInfo__, which under the
// default consistency policy may not see a write at once: the instance is
// strongly consistent, as an App Engine project's tests would make it.
func TestBlobstore(t *testing.T) {
	runCasesWith(t, aetest.Options{StronglyConsistentDatastore: true}, []testCase{
		{"upload, stat, read, delete", blobstoreRoundTrip},
		{"refusals", blobstoreRefusals},
	})
}

// upload posts one file to an upload URL and returns the app's status.
func upload(t *testing.T, u, filename, ctype string, data []byte) int {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	if err := w.WriteField("title", "from Go"); err != nil {
		t.Fatal(err)
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", `form-data; name="file"; filename="`+filename+`"`)
	h.Set("Content-Type", ctype)
	p, err := w.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data)
	w.Close()
	resp, err := http.Post(u, w.FormDataContentType(), &body)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	msg, _ := ioutil.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST %s: %d %s (want the app's own 404: the upload forwarded)", u,
			resp.StatusCode, msg)
	}
	return resp.StatusCode
}

func blobKeyOf(t *testing.T, ctx context.Context, filename string) appengine.BlobKey {
	t.Helper()
	keys, err := datastore.NewQuery("__BlobInfo__").Filter("filename =", filename).KeysOnly().
		GetAll(ctx, nil)
	if err != nil || len(keys) != 1 {
		t.Fatalf("__BlobInfo__ with filename %q: %v, %v", filename, keys, err)
	}
	return appengine.BlobKey(keys[0].StringID())
}

func blobstoreRoundTrip(t *testing.T, ctx context.Context) {
	u, err := blobstore.UploadURL(ctx, "/uploaded", &blobstore.UploadURLOptions{
		MaxUploadBytesPerBlob: 1 << 20,
	})
	if err != nil {
		t.Fatalf("UploadURL: %v", err)
	}
	if !strings.HasPrefix(u.Path, "/_ah/upload/") || u.Scheme != "http" || u.Host == "" {
		t.Fatalf("UploadURL = %v: want an absolute http URL under /_ah/upload/", u)
	}
	data := make([]byte, 600*1024)
	rand.New(rand.NewSource(time.Now().UnixNano())).Read(data)
	name := "go-" + uniqueSuffix() + ".bin"
	before := time.Now().Add(-time.Minute)
	upload(t, u.String(), name, "application/x-go-test", data)

	key := blobKeyOf(t, ctx, name)
	info, err := blobstore.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	sum := md5.Sum(data)
	if info.Size != int64(len(data)) || info.ContentType != "application/x-go-test" ||
		info.Filename != name || info.MD5 != hex.EncodeToString(sum[:]) ||
		info.CreationTime.Before(before) || info.CreationTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat = %+v", info)
	}

	got, err := ioutil.ReadAll(blobstore.NewReader(ctx, key))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("NewReader: %d bytes, %v; want the %d uploaded", len(got), err, len(data))
	}
	r := blobstore.NewReader(ctx, key)
	if _, err := r.Seek(500*1024, io.SeekStart); err != nil {
		t.Fatalf("Seek: %v", err)
	}
	part := make([]byte, 10)
	if _, err := io.ReadFull(r, part); err != nil || !bytes.Equal(part, data[500*1024:500*1024+10]) {
		t.Fatalf("read after Seek: %v", err)
	}
	if n, err := r.ReadAt(part, int64(len(data))-4); n != 4 || err != io.EOF ||
		!bytes.Equal(part[:4], data[len(data)-4:]) {
		t.Fatalf("ReadAt the end: %d, %v", n, err)
	}

	// A second use of the upload URL is refused.
	resp, err := http.Post(u.String(), "multipart/form-data; boundary=x", strings.NewReader("--x--"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second upload: %d, want 404", resp.StatusCode)
	}

	if err := blobstore.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := blobstore.Stat(ctx, key); err != datastore.ErrNoSuchEntity {
		t.Fatalf("Stat after Delete: %v, want ErrNoSuchEntity", err)
	}
	if _, err := ioutil.ReadAll(blobstore.NewReader(ctx, key)); err == nil ||
		!strings.Contains(err.Error(), "API error 4") {
		t.Fatalf("read after Delete: %v, want API error 4 (BLOB_NOT_FOUND)", err)
	}
	if err := blobstore.Delete(ctx, key); err != nil {
		t.Fatalf("Delete again: %v (deleting a missing blob is a no-op)", err)
	}
}

func blobstoreRefusals(t *testing.T, ctx context.Context) {
	if _, err := blobstore.UploadURL(ctx, "/x", &blobstore.UploadURLOptions{
		StorageBucket: "bucket"}); err == nil || !strings.Contains(err.Error(), "Cloud Storage") {
		t.Fatalf("UploadURL with a bucket: %v, want a refusal naming Cloud Storage", err)
	}
	if _, err := blobstore.Stat(ctx, "nosuchblob"); err != datastore.ErrNoSuchEntity {
		t.Fatalf("Stat of an unknown key: %v", err)
	}
	if _, err := ioutil.ReadAll(blobstore.NewReader(ctx, "nosuchblob")); err == nil {
		t.Fatal("reading an unknown blob succeeded")
	}
	k, err := blobstore.BlobKeyForFile(ctx, "/gs/bucket/object")
	if err != nil || k != "encoded_gs_file:YnVja2V0L29iamVjdA" {
		t.Fatalf("BlobKeyForFile = %q, %v", k, err)
	}
	if _, err := blobstore.BlobKeyForFile(ctx, "bucket/object"); err == nil {
		t.Fatal("BlobKeyForFile without /gs/ succeeded")
	}
}
