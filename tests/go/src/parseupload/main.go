// Command parseupload runs the official library's blobstore.ParseUpload on
// a request an upload's success handler received, for
// tests/e2e/test_blobstore.py: the front end's rewritten form must read
// back, through App Engine's own parser, as the blobs that were stored.
//
// Input (stdin): JSON {"content_type": "...", "body": "..."} with the body
// in Latin-1 (one character per byte). Output (stdout): JSON {"blobs":
// {field: [BlobInfo...]}, "other": {field: [values]}}, or exit status 1
// with ParseUpload's error on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"google.golang.org/appengine/blobstore"
)

type blob struct {
	BlobKey      string
	ContentType  string
	CreationTime string
	Filename     string
	Size         int64
	MD5          string
}

func main() {
	var in struct {
		ContentType string `json:"content_type"`
		Body        string `json:"body"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "parseupload: reading the input:", err)
		os.Exit(2)
	}
	body := make([]byte, 0, len(in.Body))
	for _, r := range in.Body {
		body = append(body, byte(r))
	}
	req, _ := http.NewRequest("POST", "/done", bytes.NewReader(body))
	req.Header.Set("Content-Type", in.ContentType)
	blobs, other, err := blobstore.ParseUpload(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ParseUpload:", err)
		os.Exit(1)
	}
	out := map[string]interface{}{"other": other}
	bs := map[string][]blob{}
	for field, infos := range blobs {
		for _, b := range infos {
			bs[field] = append(bs[field], blob{string(b.BlobKey), b.ContentType,
				b.CreationTime.UTC().Format(time.RFC3339Nano), b.Filename, b.Size, b.MD5})
		}
	}
	out["blobs"] = bs
	json.NewEncoder(os.Stdout).Encode(out)
}
